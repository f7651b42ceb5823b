#!/usr/bin/env bash
# Runs every Fuzz* target in the repository for FUZZTIME each.
#
#   make fuzz [FUZZTIME=15s]
#   scripts/fuzz.sh [FUZZTIME] [REGEXP]     # REGEXP picks targets by name
#   FUZZLIST=1 scripts/fuzz.sh              # list the targets, run nothing
#
# Targets are found, not listed by hand: every directory of the tree (the
# main module and nested ones such as internal/etcd35; testdata and vendor
# skipped) with a _test.go file declaring `func Fuzz…`, asked for its exact
# targets with `go test -list` (so build tags and helpers named Fuzz… that are
# not targets are handled as go test handles them).
#
# Each target first runs its seed corpus — the f.Add calls and the files in
# the package's testdata/fuzz/<Target>/, kept in git — then fuzzes. An input
# that fails is saved by go test as testdata/fuzz/<Target>/<hash> in the
# package: commit it with the fix, and every `go test` runs it from then on.
# Interesting inputs found on the way stay in $(go env GOCACHE)/fuzz.
#
# Every target runs even when one fails; the summary names the failures and
# the inputs saved, and the exit status is 1 if any failed. A target that
# stops with "context deadline exceeded" and saved no input is Go's own race
# at the end of -fuzztime (golang/go#75804, fixed in Go 1.27), reported but
# not counted as a failure.
#
# FUZZPARALLEL sets the fuzzing workers per target (default 1: the machine
# is shared).
set -uo pipefail
export LC_ALL=C  # one order for ls and comm
cd "$(dirname "$0")/.."
root=$PWD
fuzztime=${1:-${FUZZTIME:-15s}}
pick=${2:-.}
workers=${FUZZPARALLEL:-1}

# seconds of a Go duration like 15s, 2m, 1h30m, 500ms ("" for 1000x forms).
seconds() {
  local d=$1 total=0 n unit
  [[ $d =~ ^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$ ]] || { echo ""; return; }
  while [[ $d =~ ^([0-9]+)(\.[0-9]+)?(ns|us|µs|ms|s|m|h)(.*)$ ]]; do
    n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3]} d=${BASH_REMATCH[4]}
    case $unit in
      h) total=$((total + n * 3600)) ;;
      m) total=$((total + n * 60)) ;;
      s) total=$((total + n)) ;;
    esac
  done
  echo "$total"
}
# go test kills a test binary after -timeout (default 10m), fuzzing included:
# leave room for a long FUZZTIME, and for the seed corpus and the build.
timeout=10m
if s=$(seconds "$fuzztime") && [[ -n $s ]]; then
  timeout=$((2 * s + 600))s
fi

# module root of a directory: the nearest go.mod above it.
module_of() {
  local d=$1
  while [[ $d != "$root" && ! -f $d/go.mod ]]; do d=$(dirname "$d"); done
  echo "$d"
}

mapfile -t dirs < <(grep -rlE --include='*_test.go' --exclude-dir=testdata --exclude-dir=vendor \
  --exclude-dir='.?*' '^func Fuzz[A-Za-z0-9_]*\(' . | xargs -r -n1 dirname | sort -u)

failed=()
flaked=()
ran=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for dir in "${dirs[@]}"; do
  dir=$root/${dir#./}
  dir=${dir%/.}
  mod=$(module_of "$dir")
  rel=${dir#"$mod"}
  pkg=.${rel}  # "." or "./sub/dir", relative to its module
  label=${dir#"$root"/}
  [[ $dir == "$root" ]] && label=.
  if ! list=$(cd "$mod" && go test -list '^Fuzz' "$pkg" 2>&1); then
    echo "== $label: does not build"
    echo "$list" | sed 's/^/   /'
    failed+=("$label (does not build)")
    continue
  fi
  for target in $(grep -E '^Fuzz[A-Za-z0-9_]*$' <<<"$list" | grep -E -- "$pick"); do
    if [[ ${FUZZLIST:-} == 1 ]]; then
      echo "$label $target"
      continue
    fi
    echo "== $label $target ($fuzztime)"
    ran=$((ran + 1))
    corpus=$dir/testdata/fuzz/$target
    before=$(ls -A "$corpus" 2>/dev/null)
    (cd "$mod" && go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 50x \
      -parallel "$workers" -timeout "$timeout") 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    ((status == 0)) && continue
    saved=$(comm -13 <(echo "$before") <(ls -A "$corpus" 2>/dev/null) | sed "s|^|$label/testdata/fuzz/$target/|" | tr '\n' ' ')
    if [[ -z $saved ]] && grep -qE '^[[:space:]]+context deadline exceeded$' "$log" && ! grep -q -- '--- FAIL: .*/' "$log"; then
      # Go before 1.27 can fail a target as -fuzztime runs out, with no
      # input at fault (golang/go#75804): not a finding.
      flaked+=("$label $target")
      continue
    fi
    failed+=("$label $target${saved:+ — saved: $saved}")
  done
done

[[ ${FUZZLIST:-} == 1 ]] && exit 0
echo
echo "fuzzed $ran targets for $fuzztime each"
if ((${#flaked[@]})); then
  echo "stopped with \"context deadline exceeded\" and no failing input (Go's own race at the end of -fuzztime, golang/go#75804; not counted):"
  printf '  %s\n' "${flaked[@]}"
fi
if ((${#failed[@]})); then
  echo "FAILED:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
