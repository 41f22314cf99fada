#!/usr/bin/env bash
# Pod start through the CRI, with a real containerd: RunPodSandbox +
# CreateContainer + StartContainer until `true` exits (image cached), with
# the cocoon handler (process backend) and with runc, alternately, in the
# same run; prints the medians and the difference (target: cocoon adds at
# most 150 ms). Needs root; builds containerd and crictl once
# (scripts/cri-tools.sh) and installs the CNI plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-15}
[ -n "${BENCH_SHORT:-}" ] && runs=${RUNS:-2}
scripts/deps.sh --test >/dev/null
scripts/cri-tools.sh >/dev/null
CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/cocoon ./cmd/cocoon-agent ./cmd/containerd-shim-cocoon-v2
exec go run ./bench/cristart -runs "$runs" -bin bin
