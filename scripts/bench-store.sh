#!/usr/bin/env bash
# W1 store benchmark (called by `make bench` through scripts/bench.sh):
# the incremental backup of a control-plane-like data set, kubekeep against
# the seed's `rsync -a --delete` and `restic backup`, in one run on the same
# data and the same disk.
#
#   - a 1 GiB file (bbolt-like) with 1% of its 4 KiB pages rewritten at
#     random offsets,
#   - an 8 MiB append inside a 64 MiB preallocated WAL-like file,
#   - 300 small files left unchanged.
#
# Each tool makes a base copy, the data changes, and the second (incremental)
# run is measured: wall time, bytes it caused to be written (ru_oublock from
# wait4, i.e. the kernel's write_bytes accounting, via GNU time %O), and the
# growth of its destination. Env: BENCH_DIR (default a temp dir),
# BENCH_SIZE_MIB (default 1024), KUBEKEEP (default bin/kubekeep),
# BENCH_BLOCK_SIZES (default "64KiB"; e.g. "4KiB 16KiB 64KiB").
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${BENCH_SIZE_MIB:-1024}
kk=${KUBEKEEP:-bin/kubekeep}
block_sizes=${BENCH_BLOCK_SIZES:-64KiB}

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $2 ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
  fi
  command -v "$1" >/dev/null 2>&1 || { echo "bench-store: $1 is required (apt-get install $2)" >&2; exit 1; }
}
need rsync rsync
need restic restic
[ -x /usr/bin/time ] || need time time
if [ ! -x "$kk" ]; then
  mkdir -p "$(dirname "$kk")"
  go build -o "$kk" ./cmd/kubekeep
fi
kk=$(realpath "$kk")

work=${BENCH_DIR:-$(mktemp -d /var/tmp/kubekeep-bench.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src/var/lib/etcd/member/snap" "$src/var/lib/etcd/member/wal" "$src/etc/kubernetes/pki"

python3 - "$src" "$size_mib" <<'EOF'
import os, random, sys
src, size_mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
with open(f"{src}/var/lib/etcd/member/snap/db", "wb") as f:
    for _ in range(size_mib):
        f.write(os.urandom(1 << 20))
# WAL: 64 MiB preallocated (as etcd does), first 16 MiB written.
wal = f"{src}/var/lib/etcd/member/wal/0000000000000001-0000000000000001.wal"
fd = os.open(wal, os.O_CREAT | os.O_RDWR, 0o600)
os.posix_fallocate(fd, 0, 64 << 20)
os.pwrite(fd, os.urandom(16 << 20), 0)
os.close(fd)
for i in range(300):
    d = f"{src}/etc/kubernetes/pki/d{i % 10}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i}.crt", "wb") as f:
        f.write(os.urandom(rnd.randint(200, 8000)))
EOF

mutate() {
  python3 - "$src" "$size_mib" <<'EOF'
import os, random, sys
src, size_mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(2)
pages = size_mib * 256
fd = os.open(f"{src}/var/lib/etcd/member/snap/db", os.O_RDWR)
for p in rnd.sample(range(pages), pages // 100):
    os.pwrite(fd, os.urandom(4096), p * 4096)
os.close(fd)
fd = os.open(f"{src}/var/lib/etcd/member/wal/0000000000000001-0000000000000001.wal", os.O_RDWR)
os.pwrite(fd, os.urandom(8 << 20), 16 << 20)
os.close(fd)
EOF
}

# measure NAME DEST CMD...: runs CMD, records wall seconds and bytes written.
declare -A wall wbytes growth
measure() {
  local name=$1 dest=$2; shift 2
  sync
  local before after t
  before=$(du -sb "$dest" 2>/dev/null | cut -f1 || echo 0)
  t=$( { /usr/bin/time -f '%e %O' "$@" >/dev/null 2>"$work/err.$name" || { cat "$work/err.$name" >&2; exit 1; }; } 2>&1 )
  t=$(tail -n1 "$work/err.$name")
  after=$(du -sb "$dest" | cut -f1)
  wall[$name]=${t% *}
  wbytes[$name]=$(( ${t#* } * 512 ))
  growth[$name]=$(( after - before ))
}

paths=(/var/lib/etcd /etc/kubernetes)
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$work/restic-cache
restic init -q -r "$work/restic" >/dev/null
mkdir -p "$work/rsync"

# Base copies (not measured).
rsync -a --delete "$src/var/lib/etcd" "$src/etc/kubernetes" "$work/rsync/"
restic backup -q -r "$work/restic" "$src/var/lib/etcd" "$src/etc/kubernetes" >/dev/null
for bs in $block_sizes; do
  printf 'store:\n  blockSize: %s\n  minFree: 0\n' "$bs" >"$work/kk-$bs.yaml"
  "$kk" backup --config "$work/kk-$bs.yaml" --store "$work/kk-$bs" --root "$src" --no-discover \
    --allow-same-filesystem --path "${paths[0]}" --path "${paths[1]}" >/dev/null 2>"$work/kk-base.err"
done

mutate

measure rsync "$work/rsync" rsync -a --delete "$src/var/lib/etcd" "$src/etc/kubernetes" "$work/rsync/"
measure restic "$work/restic" restic backup -q -r "$work/restic" "$src/var/lib/etcd" "$src/etc/kubernetes"
for bs in $block_sizes; do
  measure "kubekeep-$bs" "$work/kk-$bs" "$kk" backup --config "$work/kk-$bs.yaml" --store "$work/kk-$bs" \
    --root "$src" --no-discover --allow-same-filesystem --path "${paths[0]}" --path "${paths[1]}" -o json
  grep -q '"id"' <("$kk" versions --config "$work/kk-$bs.yaml" --store "$work/kk-$bs" -o json 2>/dev/null) ||
    { echo "kubekeep left no versions" >&2; exit 1; }
done

changed=$(( size_mib * 256 / 100 * 4096 + 8 * 1048576 ))
printf '\nW1 incremental backup: %d MiB file, 1%% of 4 KiB pages rewritten; 8 MiB WAL append in a 64 MiB preallocated file; 300 unchanged small files\n' "$size_mib"
printf 'changed bytes: %d (%.1f MiB); %s cores; load %s\n\n' "$changed" "$(echo "$changed/1048576" | bc -l)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-18s %9s %14s %14s %12s %12s\n' tool wall_s bytes_written store_growth 'rsync/tool' 'bytes/rsync'
for name in rsync restic $(for bs in $block_sizes; do echo "kubekeep-$bs"; done); do
  speed=$(echo "${wall[rsync]} / (${wall[$name]} + 0.0001)" | bc -l)
  share=$(echo "100 * ${wbytes[$name]} / (${wbytes[rsync]} + 1)" | bc -l)
  printf '%-18s %9.2f %14d %14d %11.1fx %11.2f%%\n' "$name" "${wall[$name]}" "${wbytes[$name]}" "${growth[$name]}" "$speed" "$share"
done
printf '\ngoal: kubekeep >= 5x faster than rsync and <= 5%% of its bytes written\n'
printf 'note: rsync does not fsync; kubekeep fsyncs packs, indexes and the manifest before it returns.\n'
