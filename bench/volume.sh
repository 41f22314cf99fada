#!/usr/bin/env bash
# Sequential write and read through cocoon's userspace volume path (LUKS2
# decrypted by cocoon, FUSE file + loop device + ext4) against the same ext4
# on an unencrypted loop image and against gocryptfs, in the same run.
# Targets: read >= 60% of plaintext, faster than gocryptfs. Needs root,
# e2fsprogs, fuse3 and gocryptfs (installed by scripts/deps.sh --bench).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${MB:-256}
scripts/deps.sh --bench
CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/cocoon
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/cocoon-volbench.XXXX")
root="$work/root"
cleanup() {
  bin/cocoon --root "$root" volume close "$work/luks" 2>/dev/null || true
  umount "$work/plain" 2>/dev/null || true
  [ -n "${loop:-}" ] && losetup -d "$loop" 2>/dev/null || true
  fusermount3 -u "$work/gcfs" 2>/dev/null || umount "$work/gcfs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
size=$((MB * 2 + 64))M
head -c 32 /dev/urandom > "$work/key"
echo "setting up: cocoon volume, plain ext4 on loop, gocryptfs ($MB MiB per test)" >&2
bin/cocoon --root "$root" volume create --size "$size" --fs ext4 --kdf pbkdf2 --key-file "$work/key" "$work/vol.img" 2>/dev/null
bin/cocoon --root "$root" volume open --key-file "$work/key" "$work/vol.img" "$work/luks"
truncate -s "$size" "$work/plain.img"
mkfs.ext4 -q -F -b 4096 "$work/plain.img"
# The plain reference gets direct I/O too, as cocoon's loop device has.
loop=$(losetup --direct-io=on --find --show "$work/plain.img")
mkdir -p "$work/plain" && mount "$loop" "$work/plain"
mkdir -p "$work/gc.cipher" "$work/gcfs"
printf pass > "$work/gcpass"
gocryptfs -q -init -passfile "$work/gcpass" "$work/gc.cipher" >/dev/null
gocryptfs -q -passfile "$work/gcpass" "$work/gc.cipher" "$work/gcfs"
rate() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.0f", (b / 1048576) / (ns / 1e9) }'; }
measure() { # dir -> "write_MBps read_MBps"
  local d=$1 t0 t1 w r
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(date +%s%N); dd if=/dev/zero of="$d/f" bs=1M count="$MB" conv=fsync status=none; t1=$(date +%s%N)
  w=$(rate $((MB * 1048576)) $((t1 - t0)))
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(date +%s%N); dd if="$d/f" of=/dev/null bs=1M status=none; t1=$(date +%s%N)
  r=$(rate $((MB * 1048576)) $((t1 - t0)))
  rm -f "$d/f"; echo "$w $r"
}
# Interleaved rounds, medians: single runs on a shared 2-core VM vary by
# tens of percent.
rounds=${ROUNDS:-3}
for _ in $(seq "$rounds"); do
  measure "$work/plain" >> "$work/plain.r"
  measure "$work/luks" >> "$work/luks.r"
  measure "$work/gcfs" >> "$work/gcfs.r"
done
cat "$work/plain.r" "$work/luks.r" "$work/gcfs.r" | tr "\n" " " >&2; echo >&2
med() { awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
pw=$(med "$work/plain.r" 1); pr=$(med "$work/plain.r" 2)
lw=$(med "$work/luks.r" 1); lr=$(med "$work/luks.r" 2)
gw=$(med "$work/gcfs.r" 1); gr=$(med "$work/gcfs.r" 2)
echo "medians of $rounds interleaved rounds:"
printf 'plain ext4 on loop:        write %5s MiB/s  read %5s MiB/s\n' "$pw" "$pr"
printf 'cocoon userspace LUKS2:    write %5s MiB/s  read %5s MiB/s\n' "$lw" "$lr"
printf 'gocryptfs:                 write %5s MiB/s  read %5s MiB/s\n' "$gw" "$gr"
awk -v lr="$lr" -v pr="$pr" -v gr="$gr" -v lw="$lw" -v gw="$gw" 'BEGIN {
  printf "cocoon read = %.0f%% of plaintext (target >= 60%%); vs gocryptfs: read %.2fx, write %.2fx (target > 1)\n", 100*lr/pr, lr/gr, lw/gw }'
