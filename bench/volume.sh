#!/usr/bin/env bash
# Sequential write and read through cocoon's userspace volume path (LUKS2
# decrypted by cocoon, FUSE file + loop device + ext4) against the same ext4
# on an unencrypted loop image and against gocryptfs, in the same run.
# Targets: read >= 60% of plaintext, faster than gocryptfs. Needs root,
# e2fsprogs, fuse3 and gocryptfs (installed by scripts/deps.sh --bench).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${MB:-256}
[ -n "${BENCH_SHORT:-}" ] && MB=${MB_SHORT:-32} && ROUNDS=${ROUNDS:-1}
scripts/deps.sh --bench
CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/cocoon
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/cocoon-volbench.XXXX")
root="$work/root"
cleanup() {
  bin/cocoon --root "$root" volume close "$work/luks" 2>/dev/null || true
  umount "$work/plain" "$work/plainb" 2>/dev/null || true
  [ -n "${loop:-}" ] && losetup -d "$loop" 2>/dev/null || true
  [ -n "${loopb:-}" ] && losetup -d "$loopb" 2>/dev/null || true
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
# The plain reference gets direct I/O too, as cocoon's loop device has (the
# stricter reference); a second one is losetup's default (buffered).
loop=$(losetup --direct-io=on --find --show "$work/plain.img")
mkdir -p "$work/plain" && mount "$loop" "$work/plain"
cp --sparse=always "$work/plain.img" "$work/plainb.img"
loopb=$(losetup --find --show "$work/plainb.img")
mkdir -p "$work/plainb" && mount "$loopb" "$work/plainb"
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
# Interleaved rounds: single runs on a shared 2-core VM vary by tens of
# percent (the host's disk above all), so each round measures the three
# back to back and the ratios are taken within a round, then the median.
rounds=${ROUNDS:-5}
for i in $(seq "$rounds"); do
  read -r pw pr < <(measure "$work/plain")
  read -r lw lr < <(measure "$work/luks")
  read -r gw gr < <(measure "$work/gcfs")
  read -r bw br < <(measure "$work/plainb")
  printf 'round %d (MiB/s write/read): plain %s/%s, cocoon %s/%s, gocryptfs %s/%s, plain buffered loop %s/%s\n' "$i" "$pw" "$pr" "$lw" "$lr" "$gw" "$gr" "$bw" "$br" >&2
  echo "$pw $pr $lw $lr $gw $gr $bw $br" >> "$work/rounds"
done
med() { awk "{print $1}" "$work/rounds" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "medians of $rounds interleaved rounds:"
printf 'plain ext4 on loop (direct I/O): write %5s MiB/s  read %5s MiB/s\n' "$(med '$1')" "$(med '$2')"
printf 'cocoon userspace LUKS2:          write %5s MiB/s  read %5s MiB/s\n' "$(med '$3')" "$(med '$4')"
printf 'gocryptfs:                       write %5s MiB/s  read %5s MiB/s\n' "$(med '$5')" "$(med '$6')"
printf 'plain ext4 on loop (buffered):   write %5s MiB/s  read %5s MiB/s  (losetup'"'"'s default)\n' "$(med '$7')" "$(med '$8')"
printf 'cocoon read = %.0f%% of plaintext on a direct-I/O loop (target >= 60%%; %.0f%% of a buffered loop); vs gocryptfs: read %.2fx, write %.2fx (target > 1); medians of per-round ratios\n' \
  "$(med '100*$4/$2')" "$(med '100*$4/$8')" "$(med '$4/$6')" "$(med '$3/$5')"
