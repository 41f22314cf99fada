#!/usr/bin/env bash
# Runs cocoon's checks: installs the Debian packages the tests need if missing,
# then gofmt, go vet, the race detector on the concurrent packages, and the
# whole test suite (end-to-end tests with real runc included; they need root).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/asroot.sh
scripts/deps.sh --test
# containerd and crictl for the CRI tests, built once into a cache.
export COCOON_TOOLS=${COCOON_TOOLS:-/var/tmp/cocoon-tools}
scripts/cri-tools.sh >/dev/null
# kubelet, kube-apiserver and etcd for the kubelet test, built once too.
scripts/kube-tools.sh >/dev/null
# cosign for the image-signature tests.
scripts/image-tools.sh >/dev/null
echo "==> gofmt" >&2
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "not gofmt-formatted: $bad" >&2; exit 1; fi
echo "==> go mod tidy -diff" >&2
go mod tidy -diff
echo "==> go vet" >&2
go vet ./...
echo "==> staticcheck" >&2
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
echo "==> go test -race (concurrent packages)" >&2
go test -race -count=1 ./agent/... ./image/... ./sandbox/... ./attest/... ./tee/... ./policy/... ./policygen/... ./as/... ./token/... ./kbs/... ./volume/... ./internal/vmchan/...
echo "==> go test -tags purego ./volume (the AES-XTS fallback)" >&2
go test -count=1 -tags purego ./volume
echo "==> go test ./..." >&2
# The end-to-end suite (real containerd, critest, a kubelet, VMs under
# emulation) takes longer than go test's default 10 minutes.
go test -count=1 -timeout 45m ./...
