#!/usr/bin/env bash
# Restore part of `make bench`: a real embedded etcd filled with
# BENCH_RESTORE_SIZE bytes of values (default 1 GiB) is backed up; then the
# files and etcd phases of `kubekeep restore` rebuild an empty root from that
# version, timed against `cp -a` of the same bytes (the tree they produced).
# Goal: restore <= 1.5x cp -a. See restore/bench_test.go.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${BENCH_RESTORE_SIZE:-1073741824}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "bench-restore: ${size} bytes of etcd values, work dir $tmp"
KUBEKEEP_BENCH_RESTORE_SIZE=$size KUBEKEEP_BENCH_DIR=$tmp \
  go test -count=1 -timeout 40m -run '^TestBenchRestore$' -v ./restore/ 2>&1 |
  grep -E "bench-restore:|filled etcd|backup:|FAIL|panic|round " || true
