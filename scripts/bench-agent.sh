#!/usr/bin/env bash
# Agent benchmark: an hour-equivalent of 5-minute backup cycles (12),
# compressed in time, against a real embedded TLS etcd holding
# BENCH_AGENT_SIZE bytes of values (default 1 GiB). Between cycles 1% of
# the keys change. Reports, from /proc: the agent's CPU per cycle with every
# cycle backed up, peak RSS (VmHWM) and idle RSS (VmRSS once the cycles are
# over and the agent waits); then the same hour with the default CPU budget
# (schedules.backupCPUBudget 1%, scaled to the compressed clock) and the
# average CPU that gives at the real cadence; then the daily drill and
# verify on their own.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${BENCH_AGENT_SIZE:-1073741824}
cycles=${BENCH_AGENT_CYCLES:-12}
interval=${BENCH_AGENT_INTERVAL:-12s}
tmp=$(mktemp -d /tmp/kubekeep-bench-agent.XXXXXX)
# The filler imports the module's etcd client, so it is built from a
# throwaway directory inside the module and removed on exit.
src=$(mktemp -d "$PWD/.bench-agent.XXXXXX")
sandbox_pid= agent_pid=
cleanup() {
  for p in $agent_pid $sandbox_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp" "$src"
}
trap cleanup EXIT

go build -o "$tmp/kubekeep" ./cmd/kubekeep
go build -o "$tmp/sandbox" ./cmd/kubekeep-sandbox
cat > "$src/main.go" <<'GO'
// Fills the sandbox etcd to -size bytes of 1 MiB values, or with -churn
// rewrites that share of the keys.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	root := flag.String("root", "", "sandbox root")
	ep := flag.String("endpoint", "", "etcd endpoint")
	size := flag.Int64("size", 1<<30, "bytes of values")
	churn := flag.Float64("churn", 0, "share of keys to rewrite (0: fill)")
	round := flag.Int("round", 0, "churn round, picks which keys")
	flag.Parse()
	pki := filepath.Join(*root, "etc/kubernetes/pki/etcd")
	tc, err := transport.TLSInfo{CertFile: filepath.Join(pki, "healthcheck-client.crt"), KeyFile: filepath.Join(pki, "healthcheck-client.key"),
		TrustedCAFile: filepath.Join(pki, "ca.crt")}.ClientConfig()
	if err != nil {
		log.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*ep}, TLS: tc, DialTimeout: 5 * time.Second, MaxCallSendMsgSize: 4 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	const val = 1 << 20
	n := int(*size / val)
	buf := make([]byte, val)
	ctx := context.Background()
	if *churn == 0 {
		for i := 0; i < n; i++ {
			_, _ = rand.Read(buf)
			if _, err := cli.Put(ctx, fmt.Sprintf("/registry/bench/k%06d", i), string(buf)); err != nil {
				log.Fatal(err)
			}
		}
		return
	}
	m := max(1, int(float64(n)**churn))
	for j := 0; j < m; j++ {
		_, _ = rand.Read(buf[:4096]) // a page-sized change inside the value
		i := (*round*m*7 + j*97) % n
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/bench/k%06d", i), string(buf)); err != nil {
			log.Fatal(err)
		}
	}
}
GO
go build -o "$tmp/filler" "$src"

root=$tmp/root store=$tmp/store
"$tmp/sandbox" up "$root" > "$tmp/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 1 150); do grep -q 'sandbox ready' "$tmp/sandbox.log" 2>/dev/null && break; sleep 0.2; done
ep=$(grep -o 'etcd=[^ ]*' "$tmp/sandbox.log" | cut -d= -f2)
[ -n "$ep" ] || { cat "$tmp/sandbox.log"; exit 1; }
t0=$(date +%s.%N)
"$tmp/filler" -root "$root" -endpoint "$ep" -size "$size"
echo "bench-agent: etcd filled with $((size >> 20)) MiB of values in $(python3 -c "print(round($(date +%s.%N)-$t0,1))")s; db $(du -sh "$root/var/lib/etcd" | cut -f1)"

clk=$(getconf CLK_TCK)
# utime+stime plus the waited-for children's (the bbolt check runs in a child).
cpu() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }

# The daily drill and verify would land inside the compressed hour (they
# first run a minute after start); they are measured on their own below.
# Phase 1 measures every cycle (backupCPUBudget 0%: no run is skipped).
printf 'schedules:\n  drill: 0s\n  verify: 0s\n  backupCPUBudget: 0%%\n' > "$tmp/kubekeep.yaml"
"$tmp/kubekeep" agent --root "$root" --store "$store" --allow-same-filesystem --backup-interval "$interval" \
  --metrics-listen "" --log-format json --log-level info --config "$tmp/kubekeep.yaml" > "$tmp/agent.log" 2>&1 &
agent_pid=$!
sleep 2
echo "bench-agent: RSS at start (before the first backup finishes) $(kib $agent_pid VmRSS) KiB"
done_count() { grep -c '"msg":"job done","job":"backup"' "$tmp/agent.log" || true; }
# The first (full) backup is the cold start, not the steady state: wait
# for it and measure from there.
while [ "$(done_count)" -lt 1 ]; do sleep 0.5; done
# BENCH_AGENT_PERF=FILE records a perf profile of the agent over the cycles.
perf_pid=
if [ -n "${BENCH_AGENT_PERF:-}" ]; then
  perf record -q -F 499 -g -p "$agent_pid" -o "$BENCH_AGENT_PERF" > "$tmp/perf.log" 2>&1 &
  perf_pid=$!
fi
c0=$(cpu $agent_pid); w0=$(date +%s.%N)
for r in $(seq 1 "$cycles"); do
  "$tmp/filler" -root "$root" -endpoint "$ep" -size "$size" -churn 0.01 -round "$r"
  while [ "$(done_count)" -lt $((r + 1)) ]; do sleep 0.5; done
done
c1=$(cpu $agent_pid); w1=$(date +%s.%N)
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
sleep 15
idle=$(kib $agent_pid VmRSS); peak=$(kib $agent_pid VmHWM)
grep '"msg":"job done","job":"backup"' "$tmp/agent.log" | tail -3 | sed 's/^/  /'

# Phase 2: the same compressed hour as the agent runs it by default, with
# the 1% CPU budget scaled by the compression (a 12s interval stands for
# 5m, so 1% becomes 25%). Keys change every interval whether or not a
# backup runs; the agent skips the scheduled runs the budget does not
# allow. CPU is measured over the wall time, whatever the agent did.
secs=$(python3 -c "import re,sys; s=sys.argv[1]; print(float(s[:-1])*{'s':1,'m':60}[s[-1]])" "$interval")
scaled=$(python3 -c "print(round(1*300/$secs, 3))")
printf 'schedules:\n  drill: 0s\n  verify: 0s\n  backupCPUBudget: %s%%\n' "$scaled" > "$tmp/kubekeep.yaml"
kill -HUP "$agent_pid"
sleep 2
b0=$(done_count)
c2=$(cpu $agent_pid); w2=$(date +%s.%N)
for r in $(seq 1 12); do
  t_next=$(python3 -c "print($w2 + $r * $secs)")
  "$tmp/filler" -root "$root" -endpoint "$ep" -size "$size" -churn 0.01 -round $((100 + r))
  python3 -c "import time; time.sleep(max(0, $t_next - time.time()))"
done
c3=$(cpu $agent_pid); w3=$(date +%s.%N)
b1=$(done_count)
skips=$(grep -c 'scheduled backup skipped to stay within the CPU budget' "$tmp/agent.log" || true)
kill -TERM "$agent_pid"; wait "$agent_pid" || { echo "agent exit status $?"; exit 1; }; agent_pid=
python3 - "$c2" "$c3" "$w2" "$w3" "$clk" "$secs" "$((b1 - b0))" "$skips" "$scaled" <<'PY'
import sys
c2, c3, w2, w3, clk, secs, backups, skips, scaled = map(float, sys.argv[1:])
cpu, wall = (c3 - c2) / clk, w3 - w2
print(f"bench-agent: default budget (1%, scaled to {scaled:g}% for the {secs:g}s = 5m clock): {int(backups)} backups in 12 intervals "
      f"({int(skips)} scheduled runs skipped), agent CPU {cpu:.1f}s over {wall:.0f}s wall = {100*cpu/wall:.1f}% compressed "
      f"= {100*cpu/wall*secs/300:.2f}% of a core at the real cadence (goal <= 1%); one version every {wall/max(backups,1)*300/secs/60:.1f} min on average")
PY
# The once-a-day jobs, as the agent runs them (same code, own process).
for job in drill "verify --read-data"; do
  /usr/bin/time -f "%e %U %S %M" -o "$tmp/time" "$tmp/kubekeep" $job --store "$store" --allow-same-filesystem > "$tmp/job.log" 2>&1 ||
    { cat "$tmp/job.log"; exit 1; }
  read -r wall user sys maxkib < "$tmp/time"
  python3 -c 'import sys
job = sys.argv[1]; w, u, s, m = map(float, sys.argv[2:])
print(f"bench-agent: daily {job}: {w:.1f}s wall, {u+s:.1f}s CPU, peak RSS {m/1024:.0f} MiB; once a day = {100*(u+s)/86400:.3f}% of a core")' "$job" "$wall" "$user" "$sys" "$maxkib"
done
python3 - "$c0" "$c1" "$w0" "$w1" "$clk" "$cycles" "$idle" "$peak" <<'PY'
import sys
c0, c1, w0, w1, clk, n, idle, peak = map(float, sys.argv[1:])
cpu = (c1 - c0) / clk
wall = w1 - w0
per = cpu / n
print(f"bench-agent: {int(n)} cycles (1% of keys changed before each) in {wall:.0f}s wall, agent CPU {cpu:.1f}s = {per:.2f}s per cycle")
print(f"bench-agent: every cycle backed up (budget 0%): compressed average {100*cpu/wall:.1f}% of a core; at a strict 5-minute cadence {100*per/300:.2f}% of a core")
print(f"bench-agent: peak RSS {peak/1024:.0f} MiB, idle RSS {idle/1024:.0f} MiB (goal idle <= 64 MiB)")
PY
