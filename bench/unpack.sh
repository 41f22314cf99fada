#!/usr/bin/env bash
# Unpack throughput of a multi-layer image: cocoon's verified parallel unpack
# against `umoci unpack` of the same OCI layout, in the same run. Needs root
# (ownership, whiteouts) and umoci (apt-get install umoci).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v umoci >/dev/null || { echo "umoci missing: apt-get install umoci" >&2; exit 1; }
[ -n "${BENCH_SHORT:-}" ] && set -- -runs 1 "$@"
exec go run ./bench/unpack "$@"
