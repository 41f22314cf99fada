#!/usr/bin/env bash
# Installs the Debian packages cocoon's demo and tests need, if missing.
# Needs root (apt-get). Safe to run again.
set -euo pipefail
need=()
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx wget || need+=(busybox-static)
command -v cryptsetup >/dev/null || need+=(cryptsetup-bin)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--vm" ] || [ "${COCOON_ISOLATION:-}" = qemu ]; then
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  command -v mksquashfs >/dev/null || need+=(squashfs-tools)
  ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || need+=(linux-image-cloud-amd64)
fi
if [ "${1:-}" = "--test" ]; then
  command -v umoci >/dev/null || need+=(umoci)
  command -v node >/dev/null || need+=(nodejs)
  command -v ss >/dev/null || need+=(iproute2)
  command -v pgrep >/dev/null || need+=(procps)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v swtpm >/dev/null || need+=(swtpm)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
  command -v skopeo >/dev/null || need+=(skopeo)
fi
if [ "${1:-}" = "--bench" ]; then
  command -v gocryptfs >/dev/null || need+=(gocryptfs)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "cocoon needs these Debian packages: ${need[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "installing ${need[*]} ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
