#!/usr/bin/env bash
# Startup latency: median wall time from `cocoon run` to the exit of a
# container running `true` (image already in the layer cache), against plain
# `runc run` of the same rootfs in the same run. Prints both and the
# difference (target: cocoon adds at most 100 ms). Needs root, runc and
# busybox-static (scripts/deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-15}
[ -n "${BENCH_SHORT:-}" ] && runs=${RUNS:-2}
scripts/deps.sh
work=$(mktemp -d)
trap 'bin/cocoon --root "$work/root" rm -f bench-true >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/cocoon ./cmd/cocoon-agent
go run ./internal/cmd/mkimage -layout "$work/layout" -tag bench >/dev/null
cat > "$work/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: bench-true}
spec:
  restartPolicy: Never
  containers:
  - {name: t, image: "oci:$work/layout:bench", command: ["true"]}
YAML
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The pod's policy (cocoon run refuses a pod without one), then warm the
# layer cache (and the page cache) once.
bin/cocoon --root "$work/root" policy generate "$work/pod.yaml" >/dev/null
bin/cocoon --root "$work/root" run --rm "$work/pod.yaml"
# The same rootfs for plain runc: the cached layers, merged.
mkdir -p "$work/bundle/rootfs"
for l in "$work"/root/layers/sha256/*/fs; do cp -a "$l/." "$work/bundle/rootfs/"; done
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)
# Alternating, so that both see the same machine.
for i in $(seq "$runs"); do
  t0=$(now); bin/cocoon --root "$work/root" run "$work/pod.yaml"; t1=$(now)
  echo $(( (t1 - t0) / 1000 )) >> "$work/cocoon.us"
  bin/cocoon --root "$work/root" rm -f bench-true >/dev/null
  t0=$(now); (cd "$work/bundle" && runc run "bench-$i-$$" </dev/null >/dev/null); t1=$(now)
  echo $(( (t1 - t0) / 1000 )) >> "$work/runc.us"
done
c=$(median < "$work/cocoon.us"); r=$(median < "$work/runc.us")
printf 'cocoon run (true, cached image): median %d.%03d ms over %d runs\n' $((c/1000)) $((c%1000)) "$runs"
printf 'runc run   (true, same rootfs):  median %d.%03d ms over %d runs\n' $((r/1000)) $((r%1000)) "$runs"
d=$((c - r))
printf 'difference: cocoon adds %d ms (target: at most 100 ms); ratio %s\n' $((d/1000)) "$(awk -v c="$c" -v r="$r" 'BEGIN {printf "%.2f", c/r}')"
