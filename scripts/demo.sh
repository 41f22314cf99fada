#!/usr/bin/env bash
# The cocoon demo: installs runc and busybox-static if missing, builds cocoon
# and cocoon-agent into ./bin, builds the hello example's image locally and
# runs examples/hello (an HTTP server and a client on the pod's loopback).
# Run as root: sandboxes use namespaces, mounts and cgroups.
# COCOON_ISOLATION=qemu runs every pod in its own VM instead (needs QEMU and
# Debian's linux-image-cloud-amd64; scripts/deps.sh --vm installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/asroot.sh
scripts/deps.sh
echo "==> building cocoon and cocoon-agent into ./bin" >&2
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/ ./cmd/cocoon ./cmd/cocoon-agent ./cmd/cocoon-init
echo "==> building the example image (examples/hello/image, an OCI layout)" >&2
examples/hello/build.sh >&2
export COCOON_ROOT=${COCOON_ROOT:-/var/lib/cocoon}
bin/cocoon rm -f hello >/dev/null 2>&1 || true
echo "==> bin/cocoon policy generate examples/hello/pod.yaml -o examples/hello/pod.policy.yaml" >&2
bin/cocoon policy generate examples/hello/pod.yaml -o examples/hello/pod.policy.yaml >&2
echo "==> bin/cocoon run --rm examples/hello/pod.policy.yaml" >&2
if [ "${COCOON_ISOLATION:-process}" = qemu ]; then
  echo "    (isolation: qemu — a VM per pod, software-emulated without KVM; TEE: simulated, INSECURE;" >&2
else
  echo "    (isolation: process — namespaces only; TEE: simulated, INSECURE; for development;" >&2
fi
echo "     the agent enforces the policy whose hash the simulated report carries)" >&2
bin/cocoon run --rm examples/hello/pod.policy.yaml
echo "==> key broker: a secret released only to the attested pod" >&2
kbs_state="$COCOON_ROOT/demo-kbs"
kbs_addr=127.0.0.1:18443
[ -f "$kbs_state/kbs.json" ] || bin/cocoon kbs init --state "$kbs_state" --listen "$kbs_addr" >&2
bin/cocoon kbs serve --state "$kbs_state" --listen "$kbs_addr" --allow-sim 2>"$COCOON_ROOT/demo-kbs.log" &
kbs_pid=$!
trap 'kill $kbs_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "serving on" "$COCOON_ROOT/demo-kbs.log" 2>/dev/null && break; sleep 0.1; done
echo "    (the broker runs with --allow-sim: it trusts the simulated TEE, for this demo only)" >&2
printf 'the-database-password' | bin/cocoon kbs put kbs:///demo/secret/greeting - --state "$kbs_state"
bin/cocoon kbs annotate examples/secret/pod.yaml --state "$kbs_state" -f examples/secret/pod.kbs.yaml
bin/cocoon policy generate examples/secret/pod.kbs.yaml >&2
bin/cocoon rm -f secret >/dev/null 2>&1 || true
bin/cocoon run --rm examples/secret/pod.kbs.yaml
echo "==> encrypted volume: LUKS2, key in the broker, opened inside the sandbox" >&2
voldata=$(mktemp -d)
echo "a file only the attested pod can read" > "$voldata/note.txt"
rm -f examples/volume/data.img
bin/cocoon volume create --size 16M --fs ext4 --kbs-resource kbs:///demo/volume/key --state "$kbs_state" --from "$voldata" examples/volume/data.img
rm -rf "$voldata"
bin/cocoon kbs annotate examples/volume/pod.yaml --state "$kbs_state" -f examples/volume/pod.kbs.yaml
bin/cocoon policy generate examples/volume/pod.kbs.yaml >&2
bin/cocoon rm -f volume >/dev/null 2>&1 || true
bin/cocoon run --rm examples/volume/pod.kbs.yaml
echo "==> attestation: evidence from a running sandbox, verified against the simulated TEE's root" >&2
bin/cocoon run -d examples/hello/pod.policy.yaml >/dev/null
nonce=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
bin/cocoon attest hello --nonce "$nonce" > "${TMPDIR:-/tmp}/cocoon-demo-evidence.json"
bin/cocoon verify --trust-sim --nonce "$nonce" "${TMPDIR:-/tmp}/cocoon-demo-evidence.json"
echo "    expected host_data (the policy's sha256): $(grep 'cocoon.dev/policy-hash' examples/hello/pod.policy.yaml | awk '{print $2}')" >&2
echo "    expected measurement (cocoon measure --tee sim): $(bin/cocoon measure --tee sim)" >&2
bin/cocoon rm -f hello >/dev/null
