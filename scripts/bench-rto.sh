#!/usr/bin/env bash
# The rebuild's RTO on a node made by real kubeadm v1.34 with a large etcd:
# `kubekeep restore --version latest` from wipe to the apiserver answering
# with the restored admin.conf, against the operator's runbook (etcdctl
# snapshot save + cp -a before; mv manifests, cp -a, etcdctl snapshot
# restore after) in the same run. Needs root; builds kubeadm, kube-apiserver
# and kubectl on first use (cached). KUBEKEEP_BENCH_RTO_MIB sets the etcd
# size (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "bench-rto: needs root (private namespaces); skipped"; exit 0; fi
command -v etcdctl >/dev/null || { apt-get update -qq && apt-get install -y -qq etcd-client >/dev/null; }
export KUBEKEEP_BENCH_RTO_MIB="${KUBEKEEP_BENCH_RTO_MIB:-1024}"
go test -count=1 -timeout 40m -v -run '^TestRTOBench$' ./internal/e2e/ 2>&1 |
  grep -E 'RTO|loaded|kubekeep|runbook|what +seconds|FAIL|^ok' | grep -v 'kubeadm init phase' | sed 's/^.*│ *//'
