#!/usr/bin/env bash
# End-to-end check of stack/bin/stack against the real services:
#   - `up` is idempotent (second run is a no-op, pids unchanged) and `status` reports it;
#   - data written to PostgreSQL, Redis and Kafka survives `down` + `up`;
#   - the registry answers again after the restart;
#   - a state folder the postgres OS user cannot enter still works (unreachable_state_test.sh,
#     on its own ports and folders).
# Uses FIRSTCOME_STATE_DIR like the stack script. Leaves the stack UP.
# Output: `ok - ...` / `not ok - ...` lines, then `N passed, M failed`; exits 1 on any failure.
set -euo pipefail

STACK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin/stack"
SERVICES=(postgres redis kafka registry member-primary member-standby)
PG_URL="postgres://firstcome:firstcome@127.0.0.1:5432/firstcome"
REGISTRY_URL="http://127.0.0.1:8081/apis/ccompat/v7"
TOPIC="stack-test-marker"
TOKEN="marker-$(date +%s)-$$"

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# `pid` column of `stack status` for the default services, e.g. "postgres=12 redis=34 ...".
status_pids() { "$STACK" status "${SERVICES[@]}" | awk '{printf "%s=%s ", $1, $4}'; }

all_running() {
  local out svc
  out="$("$STACK" status "${SERVICES[@]}")"
  for svc in "${SERVICES[@]}"; do
    grep -Eq "^$svc +running +pid [0-9]+ +port [0-9]+$" <<<"$out" || { echo "$out" >&2; return 1; }
  done
}
all_stopped() {
  local out
  out="$("$STACK" status "${SERVICES[@]}")"
  [[ "$(grep -c ' stopped ' <<<"$out")" == "${#SERVICES[@]}" ]] || { echo "$out" >&2; return 1; }
}

psql_q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"; }
registry_200() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "$REGISTRY_URL/subjects")" == 200 ]]; }

# --- (a) up is idempotent ------------------------------------------------------------------
if "$STACK" up >/tmp/stack_test_up1.$$ 2>&1; then ok "first up"; else
  cat /tmp/stack_test_up1.$$; not_ok "first up"; rm -f /tmp/stack_test_up1.$$; finish; exit 1
fi
rm -f /tmp/stack_test_up1.$$
check "status: all ${#SERVICES[@]} services running with pid and port" all_running
pids_before="$(status_pids)"
up2="$("$STACK" up 2>&1)" || true
check "second up says 'already running' for every service" \
  test "$(grep -c 'already running' <<<"$up2")" -eq "${#SERVICES[@]}"
check "second up started nothing" bash -c '! grep -q ": started" <<<"$1"' _ "$up2"
pids_after="$(status_pids)"
check "pids unchanged by the second up ($pids_after)" test "$pids_before" == "$pids_after"
check "env prints the six FIRSTCOME_ URLs (with the member replica and primary)" \
  test "$("$STACK" env | grep -c '^export FIRSTCOME_')" -eq 6

# --- (b) markers survive down + up ---------------------------------------------------------
check "postgres: write marker row" psql_q \
  "CREATE TABLE IF NOT EXISTS stack_test_marker (token text PRIMARY KEY, at timestamptz DEFAULT now());
   INSERT INTO stack_test_marker (token) VALUES ('$TOKEN')"
check "redis: write marker key" test "$(redis-cli --user admin --pass firstcome_admin --no-auth-warning -h 127.0.0.1 -p 6379 SET stack:test:marker "$TOKEN")" == OK
check "kafka: create marker topic" "$STACK" topics --create --if-not-exists --topic "$TOPIC" \
  --partitions 1 --replication-factor 1
check "registry: answers before restart" registry_200

check "down" "$STACK" down
check "status: all stopped after down" all_stopped
check "up after down" "$STACK" up
check "status: all running after restart" all_running

check "postgres: marker row still there" test "$(psql_q "SELECT count(*) FROM stack_test_marker WHERE token = '$TOKEN'")" == 1
check "redis: marker key still there (AOF)" test "$(redis-cli --user admin --pass firstcome_admin --no-auth-warning -h 127.0.0.1 -p 6379 GET stack:test:marker)" == "$TOKEN"
check "kafka: marker topic still listed" bash -c '"$1" topics --list | grep -qx "$2"' _ "$STACK" "$TOPIC"
check "registry: answers after restart" registry_200

# --- (c) a clone the postgres user cannot enter (own state folder and ports, beside this one) --
if out="$(bash "$(dirname "${BASH_SOURCE[0]}")/unreachable_state_test.sh" 2>&1)"; then
  ok "a state folder the postgres user cannot enter still starts postgres (unreachable_state_test.sh)"
else
  sed 's/^/    /' <<<"$out"
  not_ok "a state folder the postgres user cannot enter still starts postgres (unreachable_state_test.sh)"
fi

finish
