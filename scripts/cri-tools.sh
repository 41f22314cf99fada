#!/usr/bin/env bash
# Builds the Kubernetes tools cocoon's CRI tests drive, from the Go module
# proxy, into a cache directory (default /var/tmp/cocoon-tools/bin; first
# argument or COCOON_TOOLS to change it): containerd and its runc shim
# v2.4.2, and crictl v1.37.0. Each is built once; ~5 minutes cold on 2 cores.
# Prints the directory.
set -euo pipefail
dir=${1:-${COCOON_TOOLS:-/var/tmp/cocoon-tools}/bin}
mkdir -p "$dir"
containerd_version=v2.4.2
crictl_version=v1.37.0
stamp="$dir/.versions"
want="containerd $containerd_version crictl $crictl_version"
if [ -x "$dir/containerd" ] && [ -x "$dir/containerd-shim-runc-v2" ] && [ -x "$dir/crictl" ] &&
   [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$dir"
  exit 0
fi
echo "building containerd $containerd_version and crictl $crictl_version into $dir (once) ..." >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
GOBIN="$dir" CGO_ENABLED=0 go install -tags no_btrfs \
  "github.com/containerd/containerd/v2/cmd/containerd@$containerd_version" \
  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_version"
GOBIN="$dir" CGO_ENABLED=0 go install "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
echo "$want" > "$stamp"
echo "$dir"
