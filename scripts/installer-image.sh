#!/usr/bin/env bash
# Builds the installer image of deploy/installer.yaml as an OCI layout
# (default ./installer-layout, tag installer): busybox-static plus cocoon,
# cocoon-agent and containerd-shim-cocoon-v2 under /cocoon. Push it with any
# OCI tool, e.g. `crane push installer-layout registry.example.com/cocoon/installer:v0.1.0`
# or `skopeo copy oci:installer-layout:installer docker://...`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-installer-layout}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
CGO_ENABLED=0 go build -trimpath -o "$bin/" ./cmd/cocoon ./cmd/cocoon-agent ./cmd/containerd-shim-cocoon-v2
go run ./internal/cmd/mkimage -layout "$out" -tag installer \
  -add /cocoon/cocoon="$bin/cocoon" -add /cocoon/cocoon-agent="$bin/cocoon-agent" \
  -add /cocoon/containerd-shim-cocoon-v2="$bin/containerd-shim-cocoon-v2"
echo "installer image: oci:$out:installer" >&2
