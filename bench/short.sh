#!/usr/bin/env bash
# Runs every benchmark script under bench/ in its short mode (BENCH_SHORT=1:
# one run, a few hundred requests, small sizes), so that a benchmark that
# breaks fails CI. It checks that each works and prints its figures; the full
# runs (the figures we report) stay manual: bench/NAME.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()
for s in bench/*.sh; do
  [ "$s" = bench/short.sh ] && continue
  echo "==> $s (short)" >&2
  start=$(date +%s)
  if BENCH_SHORT=1 bash "$s" </dev/null; then
    echo "==> $s: ok in $(( $(date +%s) - start )) s" >&2
  else
    echo "==> $s: FAILED" >&2
    failed+=("$s")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "benchmarks that failed: ${failed[*]}" >&2
  exit 1
fi
