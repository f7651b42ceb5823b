#!/usr/bin/env bash
# Reading objects out of the store, as a user does it: the kubekeep CLI
# (`get`, `get --at`, `objects RESOURCE`, `diff`) against a store holding
# versions of a kubeadm-style etcd (a real embedded TLS etcd on a sandbox
# root, filled with protobuf ConfigMaps) in steady state: version 1 a full
# snapshot by the agent, whose delta stream then runs throughout; version 2
# and a chain of BENCH_OBJECTS_CHAIN more journal versions, each a one-shot
# `kubekeep backup` after a round of churn (the target ConfigMap and
# BENCH_OBJECTS_CHURN of all ConfigMaps rewritten at their own size), so
# `latest` is a journal version whose base is that many rounds old, as in
# production (etcd.fullSnapshot.journalShare 20% at 1% churn per 5 minutes:
# a full snapshot every few hours, `latest` dozens of journal versions on).
# Timed: get of latest, of the chain's middle and of version 1 (the full),
# get --at a moment in the last round, objects and diff v1..latest; printed:
# the chain length, the journal bytes since the base, and what get latest
# logs (deltaEvents: journal events replayed; storeBytesRead). Each get's
# answer is checked first (the target's payload length says which round).
# Timing is cold (page cache dropped:
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
#   BENCH_OBJECTS_CHAIN   journal versions after version 2 (default 24; each
#                         a churn round, the journal flush, a backup)
#   BENCH_OBJECTS_CHURN   share of the ConfigMaps rewritten per round, besides
#                         the target (default 0.01)
#   BENCH_OBJECTS_RUNS    warm runs per command (default 10)
#   BENCH_OBJECTS_COLD    cold runs per command, each kind (default 5)
#   BENCH_OBJECTS_LIB=0   skip the library and operator timing (benchsnap)
#   BENCH_OBJECTS_SEGFILES  also time get of latest with that many more
#                         (empty) segment files in the journal (default
#                         40000: a day of one file per 2 s flush, what the
#                         agent's merging of small segments avoids); 0: skip
#   BENCH_DIR             work directory (default: a temp dir, removed)
#   BENCH_OBJECTS_KEEP=1  keep each size's dir (the store, for profiling);
#                         with BENCH_DIR, as the work dir is removed otherwise
#
# Goals (issue 14): get <= 100 ms cold and <= 20 ms warm on 1 GiB and 8 GiB;
# get --at within 2x of get; objects and diff in time proportional to what
# they print. Here also: get of latest flat in the chain's length (within 2x
# of get of the full version 1; before the journal key index, get replays
# every journal segment since the base).
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
chain=${BENCH_OBJECTS_CHAIN:-24}
churn=${BENCH_OBJECTS_CHURN:-0.01}
segfiles=${BENCH_OBJECTS_SEGFILES:-40000}
case $segfiles in ''|*[!0-9]*) echo "bench-objects: BENCH_OBJECTS_SEGFILES=$segfiles: want a count (0 or more)"; exit 2;; esac
case $chain in ''|*[!0-9]*) echo "bench-objects: BENCH_OBJECTS_CHAIN=$chain: want a count (0 or more)"; exit 2;; esac
python3 -c 'import sys; c = float(sys.argv[1]); sys.exit(0 if 0 <= c <= 1 else 1)' "$churn" 2>/dev/null ||
  { echo "bench-objects: BENCH_OBJECTS_CHURN=$churn: want a share from 0 to 1, like 0.01"; exit 2; }
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

# As installed (make build): the front as kubekeep, the whole CLI beside it.
go build -tags kubekeep_front -o "$work/kubekeep" ./cmd/kubekeep
go build -o "$work/kubekeep-core" ./cmd/kubekeep
go build -o "$work/benchsnap" ./objects/internal/benchsnap
# The etcd side: sandbox root, etcd with a raised quota, fill, the
# operator's snapshot file, and changes on SIGUSR1. It imports the module's
# internal packages, so it is built from a throwaway dir inside the module.
cat > "$src/main.go" <<'GO'
// Command benchobjects serves a kubeadm sandbox root whose etcd holds
// -size bytes of ConfigMaps, saves a snapshot file as `etcdctl snapshot
// save` would, and on each SIGUSR1 rewrites the target ConfigMap (its
// payload 4096+round bytes) and -churn of all the others (each at its own
// size, a new payload; each round the next keys of a fixed shuffle).
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
	"slices"
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
	churn := flag.Float64("churn", 0.01, "share of the ConfigMaps rewritten per SIGUSR1, besides the target")
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
	type cmKey struct {
		ns, name string
		n        int
	}
	var written, puts, smalls atomic.Int64
	var mu sync.Mutex
	var keys []cmKey
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 3))
			var mine []cmKey
			for i := 0; ; i++ {
				done := written.Load()
				if done >= *size {
					break
				}
				var ns, name string
				n := 256 << 10
				if float64(done) < *small*float64(*size) {
					ns, name, n = fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("cm-%d-%d", w, i), 1024+rnd.IntN(15<<10)
					smalls.Add(1)
				} else {
					ns, name = "bulk", fmt.Sprintf("big-%d-%d", w, i)
				}
				if err := put(rnd, ns, name, n); err != nil {
					errc <- err
					return
				}
				mine = append(mine, cmKey{ns, name, n})
				puts.Add(1)
				if written.Add(int64(n)+200) >= *size {
					if st, err := cli.Status(ctx, srv.Endpoint()); err == nil && st.DbSize < *size {
						written.Store(st.DbSize)
					}
				}
			}
			mu.Lock()
			keys = append(keys, mine...)
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
		puts.Load(), smalls.Load(), time.Since(t0).Round(time.Second), float64(st.DbSize)/(1<<30), st.Header.Revision)

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
	// Each round rewrites the next m keys of a fixed shuffle, so rounds
	// touch different keys until the shuffle wraps.
	slices.SortFunc(keys, func(a, b cmKey) int { return strings.Compare(a.ns+"/"+a.name, b.ns+"/"+b.name) })
	perm := rand.New(rand.NewPCG(4, 5)).Perm(len(keys))
	m := min(len(keys), int(*churn*float64(len(keys))+0.5))
	round := 0
	for s := range sig {
		if s != syscall.SIGUSR1 {
			return
		}
		round++
		t0 := time.Now()
		if err := put(rnd, targetNS, targetName, 4096+round); err != nil {
			log.Fatal(err)
		}
		var bytes atomic.Int64
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for j := w; j < m; j += 8 {
					k := keys[perm[((round-1)*m+j)%len(keys)]]
					if err := put(rnd, k.ns, k.name, k.n); err != nil {
						errc <- err
						return
					}
					bytes.Add(int64(k.n))
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-errc:
			log.Fatal(err)
		default:
		}
		resp, err := cli.Get(ctx, "/registry/configmaps/"+targetNS+"/"+targetName)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("churned: round=%d target=%d keys=%d of %d payload=%d rev=%d in %s at=%s\n", round, 4096+round, m, len(keys), bytes.Load(),
			resp.Header.Revision, time.Since(t0).Round(time.Millisecond), time.Now().UTC().Format(time.RFC3339Nano))
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

# ioof.py OUT ERR IO CMD...: runs CMD, its stdout to OUT and stderr to ERR,
# and writes what the kernel counted for it (/proc/PID/io, read before the
# exited process is reaped) to IO as JSON: rchar is every byte read(2)
# returned, page cache or not (what the command read and decoded; mmap'd
# reads are not in it), read_bytes what came from the disk.
cat > "$work/ioof.py" <<'PY'
import json, os, subprocess, sys
out, err, io = sys.argv[1:4]
with open(out, "wb") as o, open(err, "wb") as e:
    p = subprocess.Popen(sys.argv[4:], stdout=o, stderr=e)
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
    with open(f"/proc/{p.pid}/io") as f:
        acct = {k: int(v) for k, v in (l.split(":") for l in f if ":" in l)}
    rc = p.wait()
with open(io, "w") as f:
    json.dump(acct, f)
if rc != 0:
    sys.exit(f"{' '.join(sys.argv[4:])} exited {rc}: {open(err).read()[-2000:]}")
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
  "$work/benchobjects" -dir "$d" -size "$size" -small "$small" -churn "$churn" > "$d/etcd.log" 2>&1 &
  etcd_pid=$!
  wait_log "$d/etcd.log" '^ready:' 3600
  grep -E '^(filled|snapshot):' "$d/etcd.log" | sed 's/^/  /'
  root=$(sed -n 's/^ready: root=\([^ ]*\) .*/\1/p' "$d/etcd.log")
  key=$(sed -n 's/^ready: .* key=\(.*\)$/\1/p' "$d/etcd.log")
  store=$d/store
  kk() { "$work/kubekeep" --store "$store" --allow-same-filesystem "$@"; }

  # Version 1 (a full snapshot) by the agent, which then streams the
  # deltas get --at reads, and keeps streaming through the whole chain
  # (its own next backup is 24h away); version 2 and the chain by one-shot
  # backups while the stream runs: journal versions (version 1 plus the
  # journal), what `latest` is between full snapshots at a 5-minute cadence.
  printf 'schedules:\n  drill: 0s\n  verify: 0s\n  backupCPUBudget: 0%%\n' > "$d/kubekeep.yaml"
  t0=$(date +%s.%N)
  "$work/kubekeep" agent --root "$root" --store "$store" --allow-same-filesystem --backup-interval 24h \
    --metrics-listen "" --log-format json --config "$d/kubekeep.yaml" > "$d/agent.log" 2>&1 &
  agent_pid=$!
  wait_log "$d/agent.log" '"msg":"job done","job":"backup"' 1800
  echo "  version 1 (agent's first backup): $(python3 -c "print(round($(date +%s.%N)-$t0,1))")s"
  sleep 3
  # Round r rewrites the target to a 4096+r-byte payload; version 2 is
  # after round 2, chain version k after round 2+k. The --at moment is in
  # the last round: its changes durable in the journal, its backup not
  # yet made (so --at reads the version before plus the journal).
  rounds=$((2 + chain)) last=
  for r in $(seq 1 "$rounds"); do
    kill -USR1 "$etcd_pid"; wait_log "$d/etcd.log" "churned: round=$r " 300
    sleep 4 # past the journal's flush (etcd.deltaFlush 2s)
    [ "$r" != 1 ] || continue
    if [ "$r" = "$rounds" ]; then at=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ); sleep 1; fi
    t0=$(date +%s.%N)
    kk backup --root "$root" -o json > "$d/backup$r.json" 2> "$d/backup$r.log" || { cat "$d/backup$r.log"; exit 1; }
    last=$(python3 -c "print(round($(date +%s.%N)-$t0,1))")
    [ "$r" != 2 ] || echo "  version 2 (kubekeep backup beside the agent's delta stream): ${last}s"
  done
  [ "$chain" = 0 ] || echo "  chain: $chain journal versions after version 2 (each: churn round, flush, backup); the last backup ${last}s"
  grep '^churned: ' "$d/etcd.log" | tail -1 | sed 's/^/  last round: /'
  sleep 3 # the stream's progress past the --at moment, then the agent goes
  kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=
  kk versions -o json > "$d/versions.json"
  mid=$(((chain + 1) / 2))
  read -r v1 v2 vmid vlast nvers kinds < <(python3 - "$d/versions.json" "$mid" <<'PY'
import json, sys
vs = json.load(open(sys.argv[1]))
vs = vs.get("versions", vs) if isinstance(vs, dict) else vs
mid = int(sys.argv[2])
def kind(v):
    e = v.get("etcd") or {}
    return v.get("etcdKind") or e.get("source") or e.get("Source") or "?"
ids = [v.get("id") or v.get("ID") or v.get("version") for v in vs]
ks = [kind(v) for v in vs]
runs = []  # the kinds, run-length: full,journal x25
for k in ks:
    if runs and runs[-1][0] == k:
        runs[-1][1] += 1
    else:
        runs.append([k, 1])
print(ids[0], ids[1], ids[1 + mid], ids[-1], len(ids), ",".join(k if n == 1 else f"{k}x{n}" for k, n in runs))
PY
)
  jbytes=$(du -sb "$store/journals" | cut -f1)
  echo "  store: $(du -sh "$store" | cut -f1), $nvers versions (etcd: $kinds): v1 $v1, v2 $v2, middle (chain $mid) $vmid, latest $vlast"
  echo "  journal since the base (version 1; du -sb $store/journals): $jbytes bytes ($(python3 -c "print(round($jbytes / 2**20, 1))") MiB)"
  want=full,journal
  [ "$rounds" = 2 ] || want=full,journalx$((rounds - 1))
  if [ "$nvers" != "$rounds" ] || [ "$kinds" != "$want" ]; then
    echo "bench-objects: want $rounds versions, version 1 full and the rest journal ($want); have $nvers ($kinds)"; exit 1
  fi

  # The answers must be right before they are timed; each get's log
  # (JSON on stderr) says what it replayed and read through the store, the
  # kernel what it read(2) in all (journal segments included).
  kkio() { local f=$1; shift; python3 "$work/ioof.py" "$d/$f.json" "$d/$f.err" "$d/$f.io" \
    "$work/kubekeep" --store "$store" --allow-same-filesystem --log-format json "$@"; }
  kkio get get --version latest "$key" -o json
  kkio getmid get --version "$vmid" "$key" -o json
  kkio get1 get --version "$v1" "$key" -o json
  kkio getat get --at "$at" "$key" -o json
  python3 - "$d" "$((4096 + rounds))" "$((4098 + mid))" 4096 "$((4096 + rounds))" <<'PY'
import json, sys
d, want = sys.argv[1], [int(x) for x in sys.argv[2:]]
names = ["get --version latest", "get --version <middle>", "get --version <v1>", "get --at <last round>"]
got = [len(json.load(open(f"{d}/{f}.json"))["data"]["payload"]) for f in ("get", "getmid", "get1", "getat")]
for n, w, g in zip(names, want, got):
    print(f"  check {n:<24} target payload: want {w} bytes (round {w - 4096}), got {g}: {'ok' if g == w else 'WRONG'}")
for f, n in (("get", names[0]), ("getmid", names[1]), ("get1", names[2]), ("getat", names[3])):
    io = json.load(open(f"{d}/{f}.io"))
    for line in open(f"{d}/{f}.err"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "object":
            print(f"  log   {n:<24} deltaEvents {rec.get('deltaEvents', 0)}, storeBytesRead {rec.get('storeBytesRead')} "
                  f"({rec.get('storeBytesRead', 0) / 2**20:.1f} MiB), indexed {rec.get('indexed')}, snapshotRevision {rec.get('snapshotRevision')}; "
                  f"read(2) in all {io['rchar'] / 2**20:.1f} MiB")
if got != want:
    sys.exit("bench-objects: a get answered the wrong round (above)")
PY
  res=$d/results.jsonl
  echo "  -- CLI from the store ($label db; cold: page cache dropped; store cold: only the store's files evicted; warm: median of $runs)"
  export STORE=$store
  tm() { local name=$1; shift; python3 "$work/timeit.py" "$name" "$colds" "$runs" "$res" "$work/kubekeep" --store "$store" --allow-same-filesystem "$@"; }
  python3 "$work/timeit.py" "version (the binary's start: the floor)" "$colds" "$runs" "$res" "$work/kubekeep" version
  tm "get --version latest (chain end)" get --version latest "$key"
  # The same through the whole CLI in one binary (kubekeep-core), what
  # kubekeep was before the front: the start-up the front saves.
  python3 "$work/timeit.py" "version, kubekeep-core (whole CLI)" "$colds" "$runs" "$res" "$work/kubekeep-core" version
  python3 "$work/timeit.py" "get --version latest, kubekeep-core" "$colds" "$runs" "$res" "$work/kubekeep-core" --store "$store" --allow-same-filesystem get --version latest "$key"
  tm "get --version <middle of the chain>" get --version "$vmid" "$key"
  tm "get --version <v1: full>" get --version "$v1" "$key"
  tm "get --at <in the chain's last round>" get --at "$at" "$key"
  tm "objects deployments --version latest" objects --version latest deployments
  tm "objects configmaps -n ns-7 --version latest" objects --version latest configmaps -n ns-7
  tm "diff v1 latest" diff "$v1" "$vlast"
  if [ "$segfiles" -gt 0 ]; then
    # What a journal of one segment file per flush costs: every get of
    # latest lists the journal (latest passes over a journal version whose
    # chain broke). Empty files named past the tail stand for the day of
    # segments an agent wrote before it merged them (a flush every ~2 s
    # that saw a change); they are removed again.
    jdir=$store/journals/etcd-deltas
    python3 - "$jdir" "$segfiles" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    first = 10**15 + 2 * i
    open(os.path.join(d, "%020d-%020d-%d.seg" % (first, first + 1, 1796155299000000000 + i * 2 * 10**9)), "w").close()
PY
    tm "journal of $segfiles more segment files: get --version latest" get --version latest "$key"
    find "$jdir" -name '000001000000000*.seg' -size 0 -delete
  fi
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
  python3 - "$res" "$label" "$op" "$chain" "$jbytes" "$d" <<'PY'
import json, re, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
label, op, chain, jbytes, d = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
logged = {}
for line in open(f"{d}/get.err"):
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    if rec.get("msg") == "object":
        logged = rec
rchar = json.load(open(f"{d}/get.io"))["rchar"]
def ms(s):  # a Go duration: 2m3.348s, 9.474s, 950ms
    unit = {"h": 3600e3, "m": 60e3, "s": 1e3, "ms": 1, "us": 1e-3, "µs": 1e-3}
    parts = re.findall(r"([0-9.]+)(h|ms|us|µs|m|s)", s or "")
    return sum(float(v) * unit[u] for v, u in parts) if parts else None
opms = ms(op)
by = lambda prefix: next(r for r in rs if r["name"].startswith(prefix))
floor, get, getmid, get1, at = by("version "), by("get --version latest"), by("get --version <middle"), by("get --version <v1"), by("get --at")
ok = lambda b: "met" if b else "NOT met"
print(f"  == {label}: side by side (CLI from the store vs the operator's way); latest is journal version {chain + 1} on the full version 1, {jbytes / 2**20:.1f} MiB of journal since it")
print(f"  get latest: deltaEvents {logged.get('deltaEvents', 0)}, storeBytesRead {logged.get('storeBytesRead')}, read(2) in all {rchar / 2**20:.1f} MiB")
print(f"  {'':<62}{'cold ms':>10}{'store cold':>12}{'warm ms':>10}{'lines':>8}")
for r in rs:
    sc = r['storeCold'] if r['name'].split(' ')[0] != 'version' else '-'
    print(f"  {'kubekeep ' + r['name'][:52]:<62}{r['cold']:>10}{sc:>12}{r['warm']:>10}{r['outputLines']:>8}")
if opms:
    print(f"  {'operator: etcdutl snapshot restore + etcd + etcdctl get':<62}{opms:>10.0f}{'':>10}")
    print(f"  RATIO operator / kubekeep get latest (cold) = {opms / get['cold']:.1f}x")
print(f"  (CLI: the kubekeep command from the store, process start included; the 'objects:' lines above are the library on a file)")
for lbl, g in (("latest", get), ("middle of the chain", getmid), ("version 1", get1)):
    print(f"  goal get <= 100 ms cold, <= 20 ms warm ({lbl}): {g['cold']} ms {ok(g['cold'] <= 100)} (store cold {g['storeCold']} ms {ok(g['storeCold'] <= 100)}), {g['warm']} ms {ok(g['warm'] <= 20)}")
print(f"  (the binary alone: {floor['cold']} ms cold, {floor['warm']} ms warm)")
seg = next((r for r in rs if r["name"].startswith("journal of ")), None)
if seg:
    print(f"  RATIO get latest with {seg['name'].split()[2]} more journal segment files / without (warm) = {seg['warm'] / get['warm']:.1f}x"
          f" ({seg['warm']} vs {get['warm']} ms): what the agent's merging of small segments saves each get")
print(f"  goal get --at within 2x of get: {at['warm'] / get['warm']:.1f}x warm, {at['cold'] / get['cold']:.1f}x cold, {ok(at['warm'] <= 2 * get['warm'] and at['cold'] <= 2 * get['cold'])}")
print(f"  goal get latest flat in the chain (within 2x of get of the full version 1): {get['warm'] / get1['warm']:.1f}x warm, "
      f"{get['storeCold'] / get1['storeCold']:.1f}x store cold, {ok(get['warm'] <= 2 * get1['warm'] and get['storeCold'] <= 2 * get1['storeCold'])}; "
      f"middle {getmid['warm'] / get1['warm']:.1f}x warm")
PY
  if [ "${BENCH_OBJECTS_KEEP:-0}" = 1 ]; then echo "  kept: $d (store: $store)"; else rm -rf "$d"; fi
done
