#!/usr/bin/env bash
# VM sandbox startup and memory (qemu isolation backend).
#
# Startup: wall time from `cocoon run --isolation qemu` to the exit of a
# container running `true`, split into the guest kernel's boot (QEMU start to
# init), the agent ready, the image ready (pulled and verified inside the VM)
# and the container's exit; against the process backend in the same run.
# Under software emulation here (no /dev/kvm); with KVM where available.
#
# Memory: a small pod (one `sleep` container) in a VM: QEMU's resident set
# (anonymous and total, the translation cache included under emulation) and
# what the guest itself uses (MemTotal - MemAvailable, read inside it).
# Target: at most 128 MiB per VM sandbox.
#
# Needs root, QEMU and Debian's cloud kernel (scripts/deps.sh --vm).
# GUEST_KERNEL=FILE measures with another guest kernel, one with everything
# built in (scripts/guest-kernel.sh builds one).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
[ -n "${BENCH_SHORT:-}" ] && runs=${RUNS:-1}
scripts/deps.sh --vm
work=$(mktemp -d)
C="bin/cocoon --root $work/root"
trap '$C rm -f bench-vm bench-proc bench-mem bench-disk bench-pull bench-hold bench-holdsmall bench-small >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/ ./cmd/cocoon ./cmd/cocoon-agent ./cmd/cocoon-init
go run ./internal/cmd/mkimage -layout "$work/layout" -tag bench >/dev/null
pod() { # name command...
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - {name: t, image: "oci:$work/layout:bench", command: [$2], resources: {limits: {memory: 32Mi}}}
YAML
}
pod bench-vm '"true"' > "$work/vm.yaml"
pod bench-proc '"true"' > "$work/proc.yaml"
pod bench-mem '"sh", "-c", "sleep 2; grep -E \"MemTotal|MemAvailable\" /proc/meminfo; exec sleep 600"' > "$work/mem.yaml"
for f in vm proc mem; do $C policy generate "$work/$f.yaml" >/dev/null 2>&1; done
kernel="Debian's cloud kernel"
if [ -n "${GUEST_KERNEL:-}" ]; then
  $C guest build --kernel "$GUEST_KERNEL" --modules none >/dev/null
  kernel="$GUEST_KERNEL"
else
  $C guest build >/dev/null
fi
# KVM as cocoon judges it: /dev/kvm and a CPU with vmx or svm (sandbox.KVMProbe).
kvm=no; [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && kvm=yes
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# One warm-up run of each (page cache, sim keys).
$C run --rm --isolation qemu "$work/vm.yaml" >/dev/null
$C run --rm "$work/proc.yaml" >/dev/null
for i in $(seq "$runs"); do
  t0=$(now); $C run --isolation qemu "$work/vm.yaml" >/dev/null; t1=$(now)
  echo $(( (t1 - t0) / 1000000 )) >> "$work/vm.ms"
  $C ps -o json | python3 -c '
import json,sys,datetime
st=[s for s in json.load(sys.stdin) if s["name"]=="bench-vm"][0]
t=st.get("timings",{})
def ts(x): return datetime.datetime.fromisoformat(x.replace("Z","+00:00")[:26]+"+00:00") if "." in x else datetime.datetime.fromisoformat(x.replace("Z","+00:00"))
c=st["containers"][0]
exit_s=(ts(c["finishedAt"])-ts(st["createdAt"])).total_seconds()
print("%d %d %d %d" % (t.get("vm_kernel_s",0)*1000, t.get("agent_ready_s",0)*1000, t.get("images_ready_s",0)*1000, exit_s*1000))' >> "$work/vm.phases"
  $C rm -f bench-vm >/dev/null
  t0=$(now); $C run "$work/proc.yaml" >/dev/null; t1=$(now)
  echo $(( (t1 - t0) / 1000000 )) >> "$work/proc.ms"
  $C rm -f bench-proc >/dev/null
done
col() { awk -v c="$1" '{print $c}' "$work/vm.phases" | median; }
v=$(median < "$work/vm.ms"); p=$(median < "$work/proc.ms")
echo "VM sandbox startup (KVM: $kvm; guest kernel: $kernel), median of $runs runs, ms since the launch began:"
printf '  guest kernel booted (init started)  %6d\n' "$(col 1)"
printf '  agent ready                         %6d\n' "$(col 2)"
printf '  image ready (pulled in the VM)      %6d\n' "$(col 3)"
printf '  container exited                    %6d\n' "$(col 4)"
printf '  cocoon run --isolation qemu, wall   %6d\n' "$v"
printf 'process backend, same pod, wall       %6d\n' "$p"
awk -v v="$v" -v p="$p" 'BEGIN {printf "ratio VM / process: %.1fx (target under KVM: boot-to-workload below Kata'"'"'s 0.4-0.6 s)\n", v/p}'
# Memory of a small running pod.
$C run -d --isolation qemu "$work/mem.yaml" >/dev/null
for _ in $(seq 600); do $C logs bench-mem 2>/dev/null | grep -q MemAvailable && break; sleep 0.1; done
sleep 3
qpid=$($C ps -o json | python3 -c 'import json,sys; print([s for s in json.load(sys.stdin) if s["name"]=="bench-mem"][0]["agentPid"])')
anon=$(awk '/^RssAnon/ {print int($2/1024)}' /proc/$qpid/status)
rss=$(awk '/^VmRSS/ {print int($2/1024)}' /proc/$qpid/status)
tcg=0; [ "$kvm" = no ] && tcg=64
read -r total avail < <($C logs bench-mem | awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print int(t/1024), int(a/1024)}')
echo "VM sandbox memory (small pod, one sleeping container, VM of $(( total )) MiB usable):"
echo "  QEMU resident: $rss MiB ($anon MiB anonymous; under emulation $tcg MiB of it is the translation cache)"
echo "  used inside the guest (MemTotal - MemAvailable): $((total - avail)) MiB"
echo "  host overhead without the translation cache: $((anon - tcg)) MiB anonymous (target: at most 128 MiB)"
$C rm -f bench-mem >/dev/null

# Layer disks against guest pull (#19): image-ready time and guest memory
# for a large image (this machine's Go toolchain tree: 7 layers, ~170 MiB;
# the small image in short mode), the disks built once and then shared.
# Both from a registry on loopback (the VM reaches it through its egress
# channel), as images usually come.
if [ -n "${BENCH_SHORT:-}" ]; then
  cp -r "$work/layout" "$work/big"; tag=bench; what="the small image"
else
  go run ./internal/cmd/mkimage -layout "$work/big" -tag big -gotree >/dev/null 2>&1
  tag=big; what="the Go toolchain image (~170 MiB, 7 layers)"
fi
go build -o "$work/registry" ./internal/cmd/registry
"$work/registry" -layout "$work/big" > "$work/registry.out" &
regpid=$!
trap 'kill $regpid 2>/dev/null; $C rm -f bench-vm bench-proc bench-mem bench-disk bench-pull bench-hold bench-holdsmall bench-small bench-layout >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q ":$tag\$" "$work/registry.out" && break; sleep 0.1; done
big=$(grep ":$tag\$" "$work/registry.out")
bigpod() { # name layer-disks(true|false) command [image]
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, annotations: {cocoon.dev/layer-disks: "$2"}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - {name: t, image: "${4:-$big}", command: [$3], resources: {limits: {memory: 512Mi}}}
YAML
}
meminfo='"sh", "-c", "grep -E \"MemTotal|MemAvailable\" /proc/meminfo"'
bigpod bench-disk true "$meminfo" > "$work/disk.yaml"
bigpod bench-pull false "$meminfo" > "$work/pull.yaml"
bigpod bench-small true "$meminfo" "oci:$work/layout:bench" > "$work/small.yaml"  # (from the layout: one small layer)
bigpod bench-layout true "$meminfo" "oci:$work/big:$tag" > "$work/layout.yaml"  # the large image from its OCI layout
bigpod bench-hold true '"sh", "-c", "grep -E \"MemTotal|MemAvailable\" /proc/meminfo; exec sleep 600"' > "$work/hold.yaml"
for f in disk pull hold small layout; do $C policy generate "$work/$f.yaml" >/dev/null 2>&1; done
# ms from the agent ready to the image ready, and MiB used in the guest.
phase() { # name
  $C ps -o json | python3 -c '
import json,sys
st=[s for s in json.load(sys.stdin) if s["name"]==sys.argv[1]][0]
t=st.get("timings",{})
print(int((t.get("images_ready_s",0)-t.get("agent_ready_s",0))*1000))' "$1"
}
used() { $C logs "$1" | awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print int((t-a)/1024)}'; }
t0=$(now); $C run --isolation qemu "$work/disk.yaml" >/dev/null; t1=$(now)
cold=$(( (t1 - t0) / 1000000 )); cold_ready=$(phase bench-disk)
$C rm -f bench-disk >/dev/null
ndisks=$(ls "$work/root/layerdisks/sha256/"*.disk | wc -l)
for i in $(seq "$runs"); do
  $C run --isolation qemu "$work/disk.yaml" >/dev/null
  phase bench-disk >> "$work/disk.ready"; used bench-disk >> "$work/disk.used"
  $C rm -f bench-disk >/dev/null
  $C run --isolation qemu "$work/pull.yaml" >/dev/null
  phase bench-pull >> "$work/pull.ready"; used bench-pull >> "$work/pull.used"
  $C rm -f bench-pull >/dev/null
  $C run --isolation qemu "$work/small.yaml" >/dev/null
  used bench-small >> "$work/small.used"
  $C rm -f bench-small >/dev/null
  $C run --isolation qemu "$work/layout.yaml" >/dev/null
  used bench-layout >> "$work/layout.used"
  $C rm -f bench-layout >/dev/null
done
dr=$(median < "$work/disk.ready"); pr=$(median < "$work/pull.ready")
du=$(median < "$work/disk.used"); pu=$(median < "$work/pull.used"); su=$(median < "$work/small.used"); lu=$(median < "$work/layout.used")
echo "Layer disks against guest pull, $what, median of $runs runs (KVM: $kvm):"
printf '  first pod, disks built (%d disks): run wall %d ms, image ready %d ms after the agent\n' "$ndisks" "$cold" "$cold_ready"
printf '  image ready after the agent: layer disks %6d ms, guest pull %6d ms; ratio %s (target: at most 1/3)\n' "$dr" "$pr" \
  "$(awk -v d="$dr" -v p="$pr" 'BEGIN {printf "%.2f", (p > 0 ? d/p : 0)}')"
printf '  used inside the guest:       layer disks %6d MiB, guest pull %6d MiB; the small image from disks %d MiB (target: within 10 MiB)\n' "$du" "$pu" "$su"
printf '  the same image from its OCI layout on the host, from disks: %d MiB used in the guest (its layer blobs are not copied in)\n' "$lu"
# The host's memory: QEMU's anonymous memory while the large image's disks
# are mounted, against the small image's in a VM of the same size (the
# layers are read through the host page cache, not copied into QEMU).
bigpod bench-holdsmall true '"sh", "-c", "grep -E \"MemTotal|MemAvailable\" /proc/meminfo; exec sleep 600"' "oci:$work/layout:bench" > "$work/holdsmall.yaml"
$C policy generate "$work/holdsmall.yaml" >/dev/null 2>&1
hold() { # name file
  $C run -d --isolation qemu "$2" >/dev/null
  for _ in $(seq 600); do $C logs "$1" 2>/dev/null | grep -q MemAvailable && break; sleep 0.1; done
  sleep 2
  local pid
  pid=$($C ps -o json | python3 -c 'import json,sys; print([s for s in json.load(sys.stdin) if s["name"]==sys.argv[1]][0]["agentPid"])' "$1")
  awk '/^RssAnon/ {print int($2/1024)}' /proc/$pid/status
  $C rm -f "$1" >/dev/null
}
hbig=$(hold bench-hold "$work/hold.yaml"); hsmall=$(hold bench-holdsmall "$work/holdsmall.yaml")
printf '  QEMU anonymous memory, VM of the same size: large image from disks %d MiB, small image from disks %d MiB (target: no copy of the layers: the difference far below the image)\n' "$((hbig - tcg))" "$((hsmall - tcg))"
