#!/usr/bin/env bash
# What trusting an image by its cosign signature costs a cached-image pod
# start: `cocoon run` of `true` with a digest-pinned policy against the same
# pod with a --signed-by policy, alternating in one run (target: at most
# 20 ms more). Needs root, runc and the cosign CLI (scripts/image-tools.sh
# builds it once into /var/tmp/cocoon-tools/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-15}
[ -n "${BENCH_SHORT:-}" ] && runs=${RUNS:-2}
scripts/deps.sh
tools=$(scripts/image-tools.sh)
CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/cocoon ./cmd/cocoon-agent
exec go run ./bench/imagesig -runs "$runs" -cocoon bin/cocoon -cosign "$tools/cosign"
