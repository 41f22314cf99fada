#!/usr/bin/env bash
# Policy generation time for a local multi-layer image against gunzip +
# sha256 of its layers in the same run; prints the ratio (target <= 1.3x).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${BENCH_SHORT:-}" ] && set -- -runs 1 "$@"
exec go run ./bench/policygen "$@"
