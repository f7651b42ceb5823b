#!/usr/bin/env bash
# Demo fragment (called by scripts/demo.sh): `kubekeep agent` on a sandbox
# for a fixed ~30 s with fast schedules. While it runs, a certificate is
# renewed (a file-triggered backup), keys are written and a ConfigMap is
# deleted (etcd deltas); then the agent gets SIGTERM, must exit 0, and
# `kubekeep status` and `kubekeep versions` show what it did.
#   usage: scripts/demo-agent.sh DIR STORE
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 DIR STORE" >&2; exit 2; }
root=$1
store=$2
KUBEKEEP=${KUBEKEEP:-$PWD/bin/kubekeep}
SANDBOX=${SANDBOX:-$PWD/bin/kubekeep-sandbox}
RUN_FOR=${RUN_FOR:-30}
work=$(mktemp -d /tmp/kubekeep-demo-agent.XXXXXX)
sandbox_pid= agent_pid=
cleanup() {
  for p in $agent_pid $sandbox_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m-- %s\033[0m\n' "$*"; }

"$SANDBOX" up "$root" > "$work/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 1 150); do grep -q 'sandbox ready' "$work/sandbox.log" 2>/dev/null && break; sleep 0.2; done
grep 'sandbox ready' "$work/sandbox.log" || { cat "$work/sandbox.log"; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/kubekeep.yaml" <<YAML
root: $root
store:
  path: $store
  allowSameFilesystem: true   # demo only: a real store lives on the second disk
schedules:
  backup: 5s
  prune: 20s
  verify: 15s
  drill: 10s
  jitter: 0s
  debounce: 2s
  backupCPUBudget: 60%   # the default 1%, scaled to this clock (5s stands for 5m)
retention:
  keepLast: 4
  keepHourly: 0
  keepDaily: 0
  keepWeekly: 0
etcd:
  deltaFlush: 1s
metrics:
  listen: 127.0.0.1:$port
YAML
say "kubekeep agent --config kubekeep.yaml (backup every 5s, drill every 10s, prune 20s, verify 15s) for ${RUN_FOR}s"
sed 's/^/    /' "$work/kubekeep.yaml"
"$KUBEKEEP" agent --config "$work/kubekeep.yaml" --log-format text --log-level info > "$work/agent.log" 2>&1 &
agent_pid=$!
started=$(date +%s)
sleep 6

say "a certificate is renewed: the agent backs up after the 2s debounce"
"$SANDBOX" renew-cert "$root" /etc/kubernetes/pki/front-proxy-client.crt
say "keys written and a ConfigMap deleted: they reach the store as etcd deltas within ~1s"
"$SANDBOX" put-configmaps "$root" default --count 20
"$SANDBOX" delete "$root" configmaps/shop/shop-settings
sleep 4
grep -E 'job starting.*changed:|delta stream started|restore drill passed|pruned|store verified' "$work/agent.log" | sed 's/^/    /' | head -12 || true

say "metrics (a few of them) from http://127.0.0.1:$port/metrics and /healthz"
curl -fsS "http://127.0.0.1:$port/metrics" | grep -E '^kubekeep_(job_last_success_timestamp_seconds|newest_verified_backup_age_seconds|etcd_delta_lag_seconds|store_versions|etcd_revision_backed_up|store_writable)' | sed 's/^/    /'
echo "    /healthz: $(curl -sS "http://127.0.0.1:$port/healthz")"

remaining=$(( RUN_FOR - ($(date +%s) - started) ))
[ "$remaining" -gt 0 ] && sleep "$remaining"
say "SIGTERM: the agent lets a running job finish and exits 0"
kill -TERM "$agent_pid"
rc=0; wait "$agent_pid" || rc=$?
agent_pid=
echo "    agent exit status: $rc"
tail -2 "$work/agent.log" | sed 's/^/    /'
[ "$rc" -eq 0 ] || { echo "agent did not exit 0"; cat "$work/agent.log"; exit 1; }

say "kubekeep status"
"$KUBEKEEP" status --store "$store"
say "kubekeep versions"
"$KUBEKEEP" versions --store "$store"
say "kubekeep verify (the store is clean after the stop)"
"$KUBEKEEP" verify --store "$store" --log-level warn
