#!/usr/bin/env bash
# Builds the Kubernetes tools cocoon's CRI tests drive, from the Go module
# proxy, into a cache directory (default /var/tmp/cocoon-tools/bin; first
# argument or COCOON_TOOLS to change it): containerd and its runc shim
# v2.4.2, crictl v1.37.0 and the CRI validation suite critest v1.37.0 (a test
# binary, built in a scratch module). Each is built once; ~7 minutes cold on
# 2 cores.
# Prints the directory.
set -euo pipefail
dir=${1:-${COCOON_TOOLS:-/var/tmp/cocoon-tools}/bin}
mkdir -p "$dir"
containerd_version=v2.4.2
crictl_version=v1.37.0
stamp="$dir/.versions"
want="containerd $containerd_version crictl $crictl_version critest"
if [ -x "$dir/containerd" ] && [ -x "$dir/containerd-shim-runc-v2" ] && [ -x "$dir/crictl" ] && [ -x "$dir/critest" ] &&
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
mkdir critest && cd critest
go mod init cocoon.dev/critest-build >/dev/null 2>&1
go get -t "sigs.k8s.io/cri-tools/cmd/critest@$crictl_version" >/dev/null 2>&1
CGO_ENABLED=0 go test -c -o "$dir/critest" sigs.k8s.io/cri-tools/cmd/critest
echo "$want" > "$stamp"
echo "$dir"
