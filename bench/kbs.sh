#!/usr/bin/env bash
# Load test of `cocoon kbs serve` on loopback (bounded): the full protocol with
# sim evidence, and resource fetches with an existing token.
set -euo pipefail
cd "$(dirname "$0")/.."
CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/cocoon
[ -n "${BENCH_SHORT:-}" ] && set -- -n 200 -time 15s -rounds 1 "$@"
exec go run ./bench/kbsload "$@"
