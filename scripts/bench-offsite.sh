#!/usr/bin/env bash
# Off-site sync benchmark (issue 15), called by `make bench` through
# scripts/bench.sh: `kubekeep offsite sync` of a store to a real S3 server
# (versitygw, built from internal/versitygw) against `rclone sync` of the
# same store directory to the same server, in one run.
#
#   1. a store with one version of a BENCH_OFFSITE_MIB (default 1024) MiB
#      file of random bytes (an etcd db's worth); both tools make their
#      first copy (kubekeep: sealed for an age recipient; rclone: plain);
#   2. 1% of the file is rewritten (40 runs at random offsets) and a second
#      version is backed up; both tools sync again: that incremental sync is
#      what runs every few minutes, and what is compared;
#   3. a new machine with the identity pulls the tier and restores the file
#      (kubekeep offsite pull + restore files), timed end to end.
# Peak RSS of each kubekeep run is GNU time's %M. Env: BENCH_DIR (default:
# a temp dir, removed), BENCH_OFFSITE_MIB.
set -euo pipefail
cd "$(dirname "$0")/.."

mib=${BENCH_OFFSITE_MIB:-1024}
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $2 ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
  fi
  command -v "$1" >/dev/null 2>&1 || { echo "bench-offsite: $1 is not installed (apt-get install $2); skipped"; exit 0; }
}
need rclone rclone
[ -x /usr/bin/time ] || need time time

work=${BENCH_DIR:-$(mktemp -d /tmp/kubekeep-bench-offsite.XXXXXX)}
vgw_pid=
cleanup() {
  [ -n "$vgw_pid" ] && kill "$vgw_pid" 2>/dev/null && wait "$vgw_pid" 2>/dev/null || true
  [ -z "${BENCH_DIR:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/bin" "$work/s3root" "$work/s3ver" "$work/root/data"

echo "== building kubekeep and versitygw"
go build -o "$work/bin/kubekeep" ./cmd/kubekeep
(cd internal/versitygw && CGO_ENABLED=0 go build -trimpath -o "$work/bin/versitygw" github.com/versity/versitygw/cmd/versitygw)
kk="$work/bin/kubekeep"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AWS_ACCESS_KEY_ID=kubekeep-bench AWS_SECRET_ACCESS_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
ROOT_ACCESS_KEY=$AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
  "$work/bin/versitygw" --port "127.0.0.1:$port" posix --versioning-dir "$work/s3ver" "$work/s3root" >"$work/vgw.log" 2>&1 &
vgw_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

export RCLONE_CONFIG_VGW_TYPE=s3 RCLONE_CONFIG_VGW_PROVIDER=Other RCLONE_CONFIG_VGW_ENDPOINT="http://127.0.0.1:$port" \
  RCLONE_CONFIG_VGW_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_VGW_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
  RCLONE_CONFIG_VGW_REGION=us-east-1
# AWS_CA_BUNDLE (set on some machines) makes rclone's S3 client fail on plain http.
unset AWS_CA_BUNDLE
rclone mkdir vgw:kk-dr 2>/dev/null
rclone mkdir vgw:kk-rclone 2>/dev/null

"$kk" offsite keygen --out "$work/dr.agekey" >"$work/recipient"
cat >"$work/kubekeep.yaml" <<YAML
root: $work/root
store: {path: $work/store, allowSameFilesystem: true}
offsite:
  - name: dr
    url: s3://kk-dr/cp1
    endpoint: http://127.0.0.1:$port
    region: us-east-1
    recipients: [$(cat "$work/recipient")]
YAML
k() { "$kk" --config "$work/kubekeep.yaml" --log-level warn "$@"; }

echo "== a store with one version of a $mib MiB file"
head -c "$((mib << 20))" /dev/urandom >"$work/root/data/etcd.db"
k backup --no-discover --path /data/etcd.db >/dev/null 2>&1 || [ $? -eq 3 ]

timed() { # label, command...: prints "seconds peakKiB" into $work/t.<label>
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/t.$label" "$@"
}
rclone_sync() { # n
  /usr/bin/time -f "%e %M" -o "$work/t.rc$1" rclone sync "$work/store" vgw:kk-rclone/store --exclude 'offsite/**' --exclude 'tmp/**' \
    --exclude lock --exclude readlock --exclude /kubekeep --exclude RESTORE.md --exclude aux.json --stats 0 --stats-log-level NOTICE -v 2>"$work/rclone.$1.log"
}

timed kk1 "$kk" --config "$work/kubekeep.yaml" --log-level warn offsite sync -o json >"$work/kk1.json"
rclone_sync 1

echo "== 1% of the file rewritten, a second version"
python3 - "$work/root/data/etcd.db" <<'PY'
import os, random, sys
p = sys.argv[1]; size = os.path.getsize(p); run = 256 << 10; n = max(1, size // 100 // run)
random.seed(14)
with open(p, "r+b") as f:
    for _ in range(n):
        f.seek(random.randrange(0, size - run)); f.write(os.urandom(run))
PY
k backup --no-discover --path /data/etcd.db >/dev/null 2>&1 || [ $? -eq 3 ]
timed kk2 "$kk" --config "$work/kubekeep.yaml" --log-level warn offsite sync -o json >"$work/kk2.json"
rclone_sync 2

echo "== a new machine pulls the tier and restores the file"
start=$(date +%s.%N)
# The versions are files-only (no etcd here): name the newest, since
# "latest" means the newest good one.
newest=$("$kk" --log-level warn --store "$work/store" --allow-same-filesystem versions -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
timed pull "$kk" --config "$work/kubekeep.yaml" --log-level warn offsite pull --tier dr --identity "$work/dr.agekey" --version "$newest" --store "$work/pulled" >/dev/null
"$kk" --log-level warn --store "$work/pulled" --allow-same-filesystem restore files --version "$newest" --to "$work/restored" >/dev/null
end=$(date +%s.%N)
cmp -s "$work/root/data/etcd.db" "$work/restored/data/etcd.db" && same=identical || same=DIFFERENT

jq_() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
rc_bytes() { # the sizes of the files rclone's log says it copied
  sed -n 's/.*INFO  : \(.*\): Copied .*/\1/p' "$work/rclone.$1.log" | while read -r f; do stat -c %s "$work/store/$f" 2>/dev/null || echo 0; done |
    awk '{s+=$1} END {print s+0}'
}
t() { cut -d' ' -f1 "$work/t.$1"; }
m() { echo "$(( $(cut -d' ' -f2 "$work/t.$1") / 1024 )) MiB"; }
db=$((mib << 20))
kk2b=$(jq_ "$work/kk2.json" bytesUploaded)
printf '\n%-44s %14s %14s %10s\n' "off-site copy of a ${mib} MiB store" "kubekeep" "rclone sync" "ratio"
printf '%-44s %13ss %13ss %9.2fx\n' "first copy: time" "$(t kk1)" "$(t rc1)" "$(echo "$(t kk1) / $(t rc1)" | bc -l)"
printf '%-44s %14s %14s\n' "first copy: bytes sent" "$(jq_ "$work/kk1.json" bytesUploaded)" "$(rc_bytes 1)"
printf '%-44s %13ss %13ss %9.2fx\n' "after 1% changed: time" "$(t kk2)" "$(t rc2)" "$(echo "$(t kk2) / $(t rc2)" | bc -l)"
printf '%-44s %14s %14s\n' "after 1% changed: bytes sent" "$kk2b" "$(rc_bytes 2)"
printf '%-44s %13.2f%%\n' "after 1% changed: kubekeep bytes / db size" "$(echo "$kk2b * 100 / $db" | bc -l)"
printf '%-44s %14s\n' "peak RSS, first sync" "$(m kk1)"
printf '%-44s %14s\n' "peak RSS, incremental sync" "$(m kk2)"
printf '%-44s %13.1fs  (%s, peak RSS %s)\n' "pull + restore files on a new store" "$(echo "$end - $start" | bc -l)" "$same" "$(m pull)"
echo "(the same objects both ways: packs, indexes, manifests, journal, config.json; the rescue kit in the store, a"
echo " kubekeep binary and RESTORE.md, is left out of both. kubekeep seals every object for an age recipient before"
echo " upload; rclone sends the store's files as they are)"
