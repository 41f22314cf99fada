#!/usr/bin/env bash
# Builds the hello example's image into examples/hello/image (an OCI layout):
# busybox-static plus the static Go echo server. Needs Go and busybox-static.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$top" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/echo" ./examples/hello/echo)
(cd "$top" && go run ./internal/cmd/mkimage -layout "$here/image" -tag hello -add "/echo=$tmp/echo")
