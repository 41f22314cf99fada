#!/usr/bin/env bash
# Load test of `cocoon as serve` on loopback with sim evidence (bounded in
# count and time): attestations/s and p50/p99 latency.
set -euo pipefail
cd "$(dirname "$0")/.."
CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/cocoon
[ -n "${BENCH_SHORT:-}" ] && set -- -n 300 -time 15s "$@"
exec go run ./bench/asload "$@"
