#!/usr/bin/env bash
# One object out of a large etcd snapshot: kubekeep's objects package
# (open the bbolt file read-only, index, decode one value) against the
# operator's way (etcdutl snapshot restore, start etcd, etcdctl get).
#
#   BENCH_SIZE    snapshot size to build in bytes (default 1 GiB)
#   BENCH_BUDGET  time allowed for filling etcd (default 3m); a smaller
#                 snapshot than BENCH_SIZE is reported as such
#   BENCH_DIR     work directory (default: a temp dir, removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."

size=${BENCH_SIZE:-$((1 << 30))}
budget=${BENCH_BUDGET:-3m}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kubekeep
etcdutl=$cache/etcdutl-v3.6.16

# etcdutl's own module pins dependencies this module does not carry, so it
# is built in a throwaway module of its own, once, and cached.
if [ ! -x "$etcdutl" ]; then
  echo "== building etcdutl v3.6.16 (once, cached in $cache)"
  mod=$(mktemp -d)
  trap 'rm -rf "$mod"' EXIT
  printf 'module kubekeep/bench-etcdutl\n\ngo 1.26\n\nrequire go.etcd.io/etcd/etcdutl/v3 v3.6.16\n' >"$mod/go.mod"
  mkdir -p "$cache"
  (cd "$mod" && GOFLAGS=-mod=mod go build -o "$etcdutl" go.etcd.io/etcd/etcdutl/v3)
fi

etcdctl=$(command -v etcdctl || true)
work=${BENCH_DIR:-}
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

echo "== objects: one object out of a $((size >> 20)) MiB etcd snapshot (fill budget $budget)"
go run ./objects/internal/benchsnap -dir "$work" -size "$size" -budget "$budget" \
  -etcdutl "$etcdutl" ${etcdctl:+-etcdctl "$etcdctl"}
