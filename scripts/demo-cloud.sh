#!/usr/bin/env bash
# Demo fragment: an ECS snapshot set taken with `kubekeep cloud snapshot`
# against the local fake ECS (bin/kubekeep-ecsfake), then listed. Runs on
# its own after
#   go build -o bin/kubekeep ./cmd/kubekeep
#   go build -o bin/kubekeep-ecsfake ./cmd/kubekeep-ecsfake
# and is called by scripts/demo.sh. The fake's key pair is a made-up demo
# value, not a credential; kubekeep reads it from the standard variables.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBEKEEP=${KUBEKEEP:-bin/kubekeep}
ECSFAKE=${ECSFAKE:-bin/kubekeep-ecsfake}
for b in "$KUBEKEEP" "$ECSFAKE"; do
  [ -x "$b" ] || { echo "demo-cloud: $b not built (go build -o $b ./cmd/$(basename "$b"))" >&2; exit 1; }
done

work=$(mktemp -d)
fake_pid=
cleanup() {
  if [ -n "$fake_pid" ]; then kill "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$ECSFAKE" --listen 127.0.0.1:0 --addr-file "$work/addr" --snapshot-duration 2s \
  --access-key-id LTAIkubekeepdemo --access-key-secret kubekeep-demo-secret 2>"$work/fake.log" &
fake_pid=$!
for _ in $(seq 1 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
[ -s "$work/addr" ] || { echo "demo-cloud: the fake ECS did not start:" >&2; cat "$work/fake.log" >&2; exit 1; }
url=$(cat "$work/addr")

export ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIkubekeepdemo
export ALIBABA_CLOUD_ACCESS_KEY_SECRET=kubekeep-demo-secret
unset ALIBABA_CLOUD_SECURITY_TOKEN
# The demo must not pick up a real host's config or be sent to a proxy.
export KUBEKEEP_CONFIG=/dev/null
cloud=(--endpoint "$url" --metadata-url "$url")

if [ -n "${DEMO_ROOT:-}" ] && [ -n "${DEMO_STORE:-}" ]; then
  # Application-consistent: a kubekeep version (files + verified etcd
  # snapshot) first; its id and etcd revision go into every snapshot's tags.
  echo "== kubekeep cloud snapshot --wait --root ROOT --store STORE (fake ECS at $url)"
  "$KUBEKEEP" cloud snapshot --wait --root "$DEMO_ROOT" --store "$DEMO_STORE" --allow-same-filesystem \
    --log-level warn "${cloud[@]}"
else
  echo "== kubekeep cloud snapshot --skip-backup --wait (fake ECS at $url)"
  "$KUBEKEEP" cloud snapshot --skip-backup --wait "${cloud[@]}"
fi
echo "== kubekeep cloud list"
"$KUBEKEEP" cloud list "${cloud[@]}"
echo "== kubekeep cloud list -o json"
"$KUBEKEEP" cloud list -o json "${cloud[@]}"
