#!/usr/bin/env bash
# etcd part of `make bench`: fills a real embedded etcd (kubeadm-style TLS)
# to BENCH_ETCD_SIZE bytes of values (default 1 GiB) and measures, in one
# run: etcdsnap.Snapshot vs `etcdctl snapshot save` throughput, the 64 KiB
# block change of a second snapshot after 1% of keys change, and the delta
# RPO (put -> event fsynced). See etcdsnap/internal/benchtool.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${BENCH_ETCD_SIZE:-1073741824}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# etcdctl: the one on PATH (Debian's etcd-client is 3.4; its v3 snapshot
# API talks to 3.6 fine), else apt, else build the 3.6 one from the module
# proxy into a temp GOBIN.
etcdctl=${ETCDCTL:-$(command -v etcdctl || true)}
if [ -z "$etcdctl" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y etcd-client >/dev/null 2>&1 || true
  etcdctl=$(command -v etcdctl || true)
fi
if [ -z "$etcdctl" ]; then
  echo "bench-etcd: building etcdctl v3.6.16"
  GOBIN="$tmp/bin" go install go.etcd.io/etcd/etcdctl/v3@v3.6.16
  etcdctl="$tmp/bin/etcdctl"
fi
echo "bench-etcd: $("$etcdctl" version | head -1) ($etcdctl), target ${size} bytes of values"

go build -o "$tmp/benchtool" ./etcdsnap/internal/benchtool
# etcd logs errors on shutdown (closed listeners); keep stderr for real failures.
"$tmp/benchtool" -size "$size" -etcdctl "$etcdctl" -dir "$tmp/work" 2> >(grep -v '"level":"error".*closed network connection' >&2)
