#!/usr/bin/env bash
# A/B timing of `get` on a store bench-objects.sh kept (BENCH_DIR=…
# BENCH_OBJECTS_KEEP=1): the binaries given, alternating, two rounds,
# with the bench's own timeit.py (cold: page cache dropped; store cold:
# the store's files evicted; warm: median of 15). What the README's
# "old and new binaries alternating" rows come from.
#
#   BENCH_DIR   the kept work dir (default /tmp/b8); its SIZE dir is used
#   SIZE        the size dir in it (default 8192m)
#   A           the --at moment (RFC 3339; default: 3 s after the last
#               churn round's end in etcd.log, before its backup)
#
#   scripts/bench-objects-ab.sh /tmp/kubekeep-old /tmp/kubekeep-new
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }
W=${BENCH_DIR:-/tmp/b8}; D=$W/${SIZE:-8192m}; S=$D/store; K=configmaps/ns-7/target
read -r V1 MID < <(python3 - "$D/versions.json" <<'PY'
import json, sys
vs = json.load(open(sys.argv[1]))
vs = vs.get("versions", vs) if isinstance(vs, dict) else vs
print(vs[0]["id"], vs[1 + (len(vs) - 1) // 2]["id"])  # as bench-objects.sh picks them
PY
)
if [ -z "${A:-}" ]; then
  A=$(python3 - "$D/etcd.log" <<'PY'
import datetime, re, sys
at = [m.group(1) for m in re.finditer(r"churned: round=\d+ .* at=(\S+)", open(sys.argv[1]).read())][-1]
t = datetime.datetime.fromisoformat(at[:26].rstrip("Z")) + datetime.timedelta(seconds=3)
print(t.strftime("%Y-%m-%dT%H:%M:%SZ"))
PY
)
fi
export STORE=$S
echo "store $S: v1 $V1, middle $MID, --at $A"
for round in 1 2; do
  for bin in "$@"; do
    echo "== $bin (round $round)"
    python3 "$W/timeit.py" "version" 3 15 /dev/null "$bin" version
    for args in "get --version latest $K" "get --version $MID $K" "get --version $V1 $K" "get --at $A $K"; do
      python3 "$W/timeit.py" "${args% "$K"}" 3 15 /dev/null "$bin" --store "$S" --allow-same-filesystem $args
    done
  done
done
