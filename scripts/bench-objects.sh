#!/usr/bin/env bash
# Reading objects out of the store, as a user does it: the kubekeep CLI
# (`get`, `get --at`, `objects RESOURCE`, `diff`) against a store holding
# versions of a kubeadm-style etcd (a real embedded TLS etcd on a sandbox
# root, filled with protobuf ConfigMaps), cold (page cache dropped:
# `sync; echo 3 > /proc/sys/vm/drop_caches`, so the kubekeep binary is read
# from disk too) and warm (median of BENCH_OBJECTS_RUNS runs), side by side
# with what an operator does without kubekeep: etcdutl snapshot restore of
# a data dir from a snapshot file, start etcd on it, etcdctl get the key
# (objects/internal/benchsnap, which also times package objects reading the
# snapshot file: the library, not the CLI).
#
#   BENCH_OBJECTS_SIZES   db sizes in bytes (default: 1 GiB, and 8 GiB unless
#                         BENCH_OBJECTS_8G=0; each size is skipped, saying
#                         so, when /tmp has less than 6x its size free)
#   BENCH_OBJECTS_SMALL   share of the db in 1-16 KiB ConfigMaps (default
#                         0.25); the rest are 256 KiB ConfigMaps
#   BENCH_OBJECTS_RUNS    warm runs per command (default 10)
#   BENCH_OBJECTS_COLD    cold runs per command, each kind (default 5)
#   BENCH_OBJECTS_LIB=0   skip the library and operator timing (benchsnap)
#   BENCH_DIR             work directory (default: a temp dir, removed)
#   BENCH_OBJECTS_KEEP=1  keep each size's dir (the store, for profiling);
#                         with BENCH_DIR, as the work dir is removed otherwise
#
# Goals (issue 14): get <= 100 ms cold and <= 20 ms warm on 1 GiB and 8 GiB;
# get --at within 2x of get; objects and diff in time proportional to what
# they print.
set -euo pipefail
cd "$(dirname "$0")/.."

gib=$((1 << 30))
sizes=${BENCH_OBJECTS_SIZES:-}
if [ -z "$sizes" ]; then
  sizes=$gib
  if [ "${BENCH_OBJECTS_8G:-1}" != 0 ]; then sizes="$sizes $((8 * gib))"; fi
fi
small=${BENCH_OBJECTS_SMALL:-0.25}
runs=${BENCH_OBJECTS_RUNS:-10}
colds=${BENCH_OBJECTS_COLD:-5}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kubekeep
etcdutl=$cache/etcdutl-v3.6.16
etcdctl=$(command -v etcdctl || true)

work=${BENCH_DIR:-}
[ -n "$work" ] || work=$(mktemp -d /tmp/kubekeep-bench-objects.XXXXXX)
mkdir -p "$work"
src=$(mktemp -d "$PWD/.bench-objects.XXXXXX")
etcd_pid= agent_pid=
cleanup() {
  for p in $agent_pid $etcd_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$src"
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# etcdutl's own module pins dependencies this module does not carry, so it
# is built in a throwaway module of its own, once, and cached.
if [ "${BENCH_OBJECTS_LIB:-1}" != 0 ] && [ ! -x "$etcdutl" ]; then
  echo "== building etcdutl v3.6.16 (once, cached in $cache)"
  mod=$(mktemp -d)
  printf 'module kubekeep/bench-etcdutl\n\ngo 1.26\n\nrequire go.etcd.io/etcd/etcdutl/v3 v3.6.16\n' >"$mod/go.mod"
  mkdir -p "$cache"
  (cd "$mod" && GOFLAGS=-mod=mod go build -o "$etcdutl" go.etcd.io/etcd/etcdutl/v3)
  rm -rf "$mod"
fi

go build -o "$work/kubekeep" ./cmd/kubekeep
go build -o "$work/benchsnap" ./objects/internal/benchsnap
# The etcd side: sandbox root, etcd with a raised quota, fill, the
# operator's snapshot file, and changes on SIGUSR1. It imports the module's
# internal packages, so it is built from a throwaway dir inside the module.
cat > "$src/main.go" <<'GO'
// Command benchobjects serves a kubeadm sandbox root whose etcd holds
// -size bytes of ConfigMaps, saves a snapshot file as `etcdctl snapshot
// save` would, and on each SIGUSR1 rewrites the target ConfigMap and a
// share of the others.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

func main() {
	dir := flag.String("dir", "", "work dir: root/, snapshot.db")
	size := flag.Int64("size", 1<<30, "db bytes to fill to")
	small := flag.Float64("small", 0.25, "share of the db in 1-16 KiB ConfigMaps")
	flag.Parse()
	ctx := context.Background()
	cp, err := sandbox.FreePort()
	if err != nil {
		log.Fatal(err)
	}
	pp, err := sandbox.FreePort()
	if err != nil {
		log.Fatal(err)
	}
	r, err := sandbox.Build(filepath.Join(*dir, "root"), sandbox.Options{EtcdClientPort: cp, EtcdPeerPort: pp})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := testetcd.StartWith(ctx, r, testetcd.Options{QuotaBackendBytes: max(4<<30, 2**size)})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Stop()
	if _, err := srv.LoadCluster(ctx); err != nil {
		log.Fatal(err)
	}
	cli, err := srv.Client()
	if err != nil {
		log.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	text := make([]byte, 2<<20)
	const alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range text {
		text[i] = alpha[rnd.IntN(len(alpha))]
	}
	put := func(rnd *rand.Rand, ns, name string, n int) error {
		off := rnd.IntN(len(text) - n)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: "bench",
			Labels: map[string]string{"bench": "objects"}}, Data: map[string]string{"payload": string(text[off : off+n])}}
		_, err := testetcd.PutObject(ctx, cli, "configmaps", cm)
		return err
	}
	const targetNS, targetName = "ns-7", "target"
	if err := put(rnd, targetNS, targetName, 4096); err != nil {
		log.Fatal(err)
	}
	t0 := time.Now()
	var written, puts atomic.Int64
	var mu sync.Mutex
	var smallKeys []string
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 3))
			var mine []string
			for i := 0; ; i++ {
				done := written.Load()
				if done >= *size {
					break
				}
				var ns, name string
				n := 256 << 10
				if float64(done) < *small*float64(*size) {
					ns, name, n = fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("cm-%d-%d", w, i), 1024+rnd.IntN(15<<10)
					mine = append(mine, ns+"/"+name)
				} else {
					ns, name = "bulk", fmt.Sprintf("big-%d-%d", w, i)
				}
				if err := put(rnd, ns, name, n); err != nil {
					errc <- err
					return
				}
				puts.Add(1)
				if written.Add(int64(n)+200) >= *size {
					if st, err := cli.Status(ctx, srv.Endpoint()); err == nil && st.DbSize < *size {
						written.Store(st.DbSize)
					}
				}
			}
			mu.Lock()
			smallKeys = append(smallKeys, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		log.Fatal(err)
	default:
	}
	st, err := cli.Status(ctx, srv.Endpoint())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("filled: %d ConfigMaps (%d of 1-16 KiB) in %s, db %.2f GiB at revision %d\n",
		puts.Load(), len(smallKeys), time.Since(t0).Round(time.Second), float64(st.DbSize)/(1<<30), st.Header.Revision)

	// The operator's snapshot file, as `etcdctl snapshot save` writes it.
	t0 = time.Now()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		log.Fatal(err)
	}
	f, err := os.Create(filepath.Join(*dir, "snapshot.db"))
	if err != nil {
		log.Fatal(err)
	}
	n, err := io.Copy(f, rc)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("snapshot: %.2f GiB saved in %s\n", float64(n)/(1<<30), time.Since(t0).Round(time.Millisecond))
	fmt.Printf("ready: root=%s etcd=%s key=configmaps/%s/%s\n", r.Dir, srv.Endpoint(), targetNS, targetName)

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	round := 0
	for s := range sig {
		if s != syscall.SIGUSR1 {
			return
		}
		// The target and 0.1% of the small ConfigMaps change.
		round++
		if err := put(rnd, targetNS, targetName, 4096+round); err != nil {
			log.Fatal(err)
		}
		for j := 0; j < max(1, len(smallKeys)/1000); j++ {
			k := strings.SplitN(smallKeys[(round*7919+j*104729)%len(smallKeys)], "/", 2)
			if err := put(rnd, k[0], k[1], 2048); err != nil {
				log.Fatal(err)
			}
		}
		resp, err := cli.Get(ctx, "/registry/configmaps/"+targetNS+"/"+targetName)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("churned: round=%d rev=%d at=%s\n", round, resp.Header.Revision, time.Now().UTC().Format(time.RFC3339Nano))
	}
}
GO
go build -o "$work/benchobjects" "$src"

# timeit NAME COLD WARM OUT CMD...: runs CMD COLD times after dropping the
# whole page cache, COLD times after evicting only the store's files
# (posix_fadvise DONTNEED; the binary stays cached, as on a machine where
# kubekeep ran before) and WARM times after one warm-up run; prints the
# medians in ms. $STORE names the store.
cat > "$work/timeit.py" <<'PY'
import json, os, statistics, subprocess, sys, time
name, cold, warm, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cmd = sys.argv[5:]
store = os.environ.get("STORE", "")
def run():
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{name}: {' '.join(cmd)} exited {p.returncode}: {p.stderr.decode()[-2000:]}")
    return dt, p.stdout
def drop():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
def evict_store():
    for d, _, fs in os.walk(store):
        for f in fs:
            try:
                fd = os.open(os.path.join(d, f), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
cs = []
for _ in range(cold):
    drop()
    dt, stdout = run()
    cs.append(dt)
ss = []
if store:
    subprocess.run(["sync"], check=True)
    for _ in range(cold):
        run()
        evict_store()
        dt, stdout = run()
        ss.append(dt)
run()
ws = []
for _ in range(warm):
    dt, stdout = run()
    ws.append(dt)
lines = stdout.count(b"\n")
r = {"name": name, "cmd": cmd, "coldMs": [round(x * 1000, 1) for x in cs], "warmMs": [round(x * 1000, 1) for x in ws],
     "storeColdMs": [round(x * 1000, 1) for x in ss],
     "cold": round(statistics.median(cs) * 1000, 1) if cs else None, "warm": round(statistics.median(ws) * 1000, 1),
     "storeCold": round(statistics.median(ss) * 1000, 1) if ss else None,
     "outputLines": lines}
with open(out, "a") as f:
    f.write(json.dumps(r) + "\n")
print(f"  {name:<58} cold {r['cold']:>9} ms   store cold {r['storeCold']} ms   warm {r['warm']:>8} ms   ({lines} lines out)")
PY

wait_log() { # FILE PATTERN SECONDS
  for _ in $(seq 1 $(($3 * 5))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "bench-objects: timed out waiting for '$2' in $1"; tail -20 "$1"; return 1
}

for size in $sizes; do
  label="$((size >> 20)) MiB"
  [ "$size" -lt "$gib" ] || label="$((size / gib)) GiB"
  free=$(df -B1 --output=avail "$work" | tail -1)
  if [ "$free" -lt $((size * 6)) ]; then
    echo "== bench-objects $label: SKIPPED: $work has $((free >> 30)) GiB free, needs $((size * 6 >> 30)) (etcd, its snapshot file, the store, the operator's restore)"
    continue
  fi
  d=$work/$((size >> 20))m
  rm -rf "$d"; mkdir -p "$d"
  echo "== bench-objects $label: filling etcd ($small of it in 1-16 KiB ConfigMaps, the rest 256 KiB)"
  "$work/benchobjects" -dir "$d" -size "$size" -small "$small" > "$d/etcd.log" 2>&1 &
  etcd_pid=$!
  wait_log "$d/etcd.log" '^ready:' 3600
  grep -E '^(filled|snapshot):' "$d/etcd.log" | sed 's/^/  /'
  root=$(sed -n 's/^ready: root=\([^ ]*\) .*/\1/p' "$d/etcd.log")
  key=$(sed -n 's/^ready: .* key=\(.*\)$/\1/p' "$d/etcd.log")
  store=$d/store
  kk() { "$work/kubekeep" --store "$store" --allow-same-filesystem "$@"; }

  # Version 1 (a full snapshot) by the agent, which then streams the
  # deltas get --at reads; two rounds of changes; version 2 by a one-shot
  # backup while the stream runs: a journal version (version 1 plus the
  # journal), what `latest` is most of the time at a 5-minute cadence.
  printf 'schedules:\n  drill: 0s\n  verify: 0s\n  backupCPUBudget: 0%%\n' > "$d/kubekeep.yaml"
  t0=$(date +%s.%N)
  "$work/kubekeep" agent --root "$root" --store "$store" --allow-same-filesystem --backup-interval 24h \
    --metrics-listen "" --log-format json --config "$d/kubekeep.yaml" > "$d/agent.log" 2>&1 &
  agent_pid=$!
  wait_log "$d/agent.log" '"msg":"job done","job":"backup"' 1800
  echo "  version 1 (agent's first backup): $(python3 -c "print(round($(date +%s.%N)-$t0,1))")s"
  sleep 3
  kill -USR1 "$etcd_pid"; wait_log "$d/etcd.log" 'churned: round=1 ' 60
  sleep 4 # past the journal's flush (etcd.deltaFlush 2s)
  at=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
  sleep 1
  kill -USR1 "$etcd_pid"; wait_log "$d/etcd.log" 'churned: round=2 ' 60
  sleep 4
  t0=$(date +%s.%N)
  kk backup --root "$root" > "$d/backup2.log" 2>&1 || { cat "$d/backup2.log"; exit 1; }
  echo "  version 2 (kubekeep backup beside the agent's delta stream): $(python3 -c "print(round($(date +%s.%N)-$t0,1))")s"
  kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=
  kk versions -o json > "$d/versions.json"
  read -r v1 v2 kinds < <(python3 -c '
import json, sys
vs = json.load(open(sys.argv[1]))
vs = vs.get("versions", vs) if isinstance(vs, dict) else vs
def kind(v):
    e = v.get("etcd") or {}
    return e.get("source") or e.get("Source") or "?"
ids = [v.get("id") or v.get("ID") or v.get("version") for v in vs]
print(ids[0], ids[-1], ",".join(kind(v) for v in vs))' "$d/versions.json")
  echo "  store: $(du -sh "$store" | cut -f1); versions $v1 $v2 (etcd source: $kinds)"

  # The answers must be right before they are timed.
  kk get --version latest "$key" -o json > "$d/get.json" 2> "$d/get.err"
  kk get --version "$v1" "$key" -o json > "$d/get1.json" 2> "$d/get.err"
  kk get --at "$at" "$key" -o json > "$d/getat.json" 2> "$d/get.err"
  python3 - "$d/get.json" "$d/getat.json" "$d/get1.json" <<'PY'
import json, sys
a, b, c = (json.load(open(p)) for p in sys.argv[1:])
la, lb, lc = (len(x["data"]["payload"]) for x in (a, b, c))
if (la, lb, lc) != (4098, 4097, 4096):
    sys.exit(f"bench-objects: get latest has a {la}-byte payload (want 4098, round 2), get --at {lb} (want 4097, round 1), get of version 1 {lc} (want 4096)")
PY
  res=$d/results.jsonl
  echo "  -- CLI from the store ($label db; cold: page cache dropped; store cold: only the store's files evicted; warm: median of $runs)"
  export STORE=$store
  python3 "$work/timeit.py" "version (the binary's start: the floor)" "$colds" "$runs" "$res" "$work/kubekeep" version
  python3 "$work/timeit.py" "get --version latest $key" "$colds" "$runs" "$res" "$work/kubekeep" --store "$store" --allow-same-filesystem get --version latest "$key"
  python3 "$work/timeit.py" "get --version <v1: full> $key" "$colds" "$runs" "$res" "$work/kubekeep" --store "$store" --allow-same-filesystem get --version "$v1" "$key"
  python3 "$work/timeit.py" "get --at <between the changes> $key" "$colds" "$runs" "$res" "$work/kubekeep" --store "$store" --allow-same-filesystem get --at "$at" "$key"
  python3 "$work/timeit.py" "objects deployments (one resource type)" "$colds" "$runs" "$res" "$work/kubekeep" --store "$store" --allow-same-filesystem objects --version latest deployments
  python3 "$work/timeit.py" "objects configmaps -n ns-7" "$colds" "$runs" "$res" "$work/kubekeep" --store "$store" --allow-same-filesystem objects --version latest configmaps -n ns-7
  python3 "$work/timeit.py" "diff v1 v2 (two versions)" "$colds" "$runs" "$res" "$work/kubekeep" --store "$store" --allow-same-filesystem diff "$v1" "$v2"
  kill -TERM "$etcd_pid"; wait "$etcd_pid" || true; etcd_pid=
  rm -rf "$root/var/lib/etcd"

  op=
  if [ "${BENCH_OBJECTS_LIB:-1}" != 0 ]; then
    echo "  -- library (package objects on the snapshot file) and the operator's way (page cache dropped first)"
    sync; echo 3 > /proc/sys/vm/drop_caches
    "$work/benchsnap" -dir "$d" -reuse -etcdutl "$etcdutl" ${etcdctl:+-etcdctl "$etcdctl"} 2>&1 | grep -E '^(objects|operator|RATIO)' | sed 's/^/  /' | tee "$d/op.log"
    op=$(sed -n 's/^  operator: .* = \([0-9.hmsµ]*\)$/\1/p' "$d/op.log")
    rm -rf "$d/restored"
  fi
  python3 - "$res" "$label" "$op" <<'PY'
import json, re, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
label, op = sys.argv[2], sys.argv[3]
def ms(s):  # a Go duration: 2m3.348s, 9.474s, 950ms
    unit = {"h": 3600e3, "m": 60e3, "s": 1e3, "ms": 1, "us": 1e-3, "µs": 1e-3}
    parts = re.findall(r"([0-9.]+)(h|ms|us|µs|m|s)", s or "")
    return sum(float(v) * unit[u] for v, u in parts) if parts else None
opms = ms(op)
floor, get, get1, at = rs[0], rs[1], rs[2], rs[3]
ok = lambda b: "met" if b else "NOT met"
print(f"  == {label}: side by side (CLI from the store vs the operator's way)")
print(f"  {'':<62}{'cold ms':>10}{'store cold':>12}{'warm ms':>10}{'lines':>8}")
for r in rs:
    sc = r['storeCold'] if r['name'].split(' ')[0] != 'version' else '-'
    print(f"  {'kubekeep ' + r['name'][:52]:<62}{r['cold']:>10}{sc:>12}{r['warm']:>10}{r['outputLines']:>8}")
if opms:
    print(f"  {'operator: etcdutl snapshot restore + etcd + etcdctl get':<62}{opms:>10.0f}{'':>10}")
    print(f"  RATIO operator / kubekeep get (cold) = {opms / get['cold']:.1f}x")
print(f"  (CLI: the kubekeep command from the store, process start included; the 'objects:' lines above are the library on a file)")
for lbl, g in (("latest", get), ("version 1", get1)):
    print(f"  goal get <= 100 ms cold, <= 20 ms warm ({lbl}): {g['cold']} ms {ok(g['cold'] <= 100)} (store cold {g['storeCold']} ms {ok(g['storeCold'] <= 100)}), {g['warm']} ms {ok(g['warm'] <= 20)}")
print(f"  (the binary alone: {floor['cold']} ms cold, {floor['warm']} ms warm)")
print(f"  goal get --at within 2x of get: {at['warm'] / get['warm']:.1f}x warm, {at['cold'] / get['cold']:.1f}x cold, {ok(at['warm'] <= 2 * get['warm'] and at['cold'] <= 2 * get['cold'])}")
PY
  if [ "${BENCH_OBJECTS_KEEP:-0}" = 1 ]; then echo "  kept: $d (store: $store)"; else rm -rf "$d"; fi
done
