#!/usr/bin/env bash
# Builds the image-signing tool cocoon's signature tests run against: the
# cosign CLI v3.1.3, from the Go module proxy, into a cache directory
# (default /var/tmp/cocoon-tools/bin; first argument or COCOON_TOOLS to
# change it). Built once; ~2.5 minutes cold on 2 cores. (skopeo, for the
# encrypted-image tests, is Debian's: scripts/deps.sh --test.)
# Prints the directory.
set -euo pipefail
dir=${1:-${COCOON_TOOLS:-/var/tmp/cocoon-tools}/bin}
mkdir -p "$dir"
cosign_version=v3.1.3
stamp="$dir/.image-tools"
want="cosign $cosign_version"
if [ -x "$dir/cosign" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$dir"
  exit 0
fi
echo "building cosign $cosign_version into $dir (once) ..." >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
GOBIN="$dir" CGO_ENABLED=0 go install "github.com/sigstore/cosign/v3/cmd/cosign@$cosign_version"
echo "$want" > "$stamp"
echo "$dir"
