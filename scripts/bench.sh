#!/usr/bin/env bash
# `make bench`: every speed goal, measured in one run against the tool an
# operator would use instead. Each part prints its own side-by-side table.
set -euo pipefail
cd "$(dirname "$0")/.."
for part in store etcd objects restore agent rto offsite; do
  s=scripts/bench-$part.sh
  if [ -x "$s" ]; then
    printf '\n\033[1m#### %s\033[0m\n' "$s"
    "$s"
  fi
done
