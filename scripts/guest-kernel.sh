#!/usr/bin/env bash
# Builds a guest kernel tailored to cocoon's VM sandboxes from Debian's
# linux-source-6.1: `make tinyconfig` plus guest/kernel/cocoon-guest.config
# (virtio, the verity root, dm-crypt, FUSE, runc's needs, KVM / SEV-SNP / TDX
# guest support), everything built in. It is 4.5 MiB instead of the generic
# cloud kernel's 14 (and ~23 MiB of guest memory instead of ~41), which
# brings a small VM sandbox under 128 MiB of overhead (docs/vm.md).
#
#   scripts/guest-kernel.sh [OUT]      # default OUT: ./guest-kernel
#   bin/cocoon guest build --kernel OUT/vmlinuz-cocoon --modules none
#
# Needs root for apt-get; takes ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-guest-kernel}")
frag=$PWD/guest/kernel/cocoon-guest.config
need=()
[ -f /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
for c in bc flex bison make gcc; do command -v $c >/dev/null || need+=($c); done
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "needs the Debian packages ${need[*]}: run as root" >&2; exit 1; }
  echo "==> installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
src=${KBUILD_DIR:-/var/tmp/cocoon-guest-kernel}
if [ ! -d "$src/linux-source-6.1" ]; then
  echo "==> unpacking linux-source-6.1 into $src" >&2
  mkdir -p "$src" && tar -C "$src" -xf /usr/src/linux-source-6.1.tar.xz
fi
cd "$src/linux-source-6.1"
echo "==> configuring: tinyconfig + $frag" >&2
make -s tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$frag" >/dev/null 2>&1
make -s olddefconfig 2>/dev/null
# Every option the fragment asks for must have survived olddefconfig.
missing=$(grep '^CONFIG_.*=y$' "$frag" | while read -r l; do grep -qx "$l" .config || echo "${l%=y}"; done)
[ -z "$missing" ] || { echo "the kernel configuration lacks: $missing" >&2; exit 1; }
echo "==> building bzImage with $(nproc) jobs" >&2
# A fixed build identity (user, host, timestamp, build number) rather than
# this machine's: the same source package and fragment give the same bytes
# (checked: builds in two directories on two runs were identical).
KBUILD_BUILD_USER=cocoon KBUILD_BUILD_HOST=cocoon KBUILD_BUILD_TIMESTAMP="1970-01-01" KBUILD_BUILD_VERSION=1 \
  make -s -j"$(nproc)" bzImage
mkdir -p "$out"
cp arch/x86/boot/bzImage "$out/vmlinuz-cocoon"
cp .config "$out/config-cocoon"
echo "$out/vmlinuz-cocoon ($(stat -c %s "$out/vmlinuz-cocoon") bytes)"
echo "next: bin/cocoon guest build --kernel $out/vmlinuz-cocoon --modules none" >&2
