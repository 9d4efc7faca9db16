#!/usr/bin/env bash
# "The first command works from any clone": a state folder the postgres OS user cannot enter
# (a clone under root's home, mode 0700) still starts PostgreSQL, whose clusters then live in
# /var/lib/firstcome/<hash>/ behind a link in the state folder; data survives down + up.
#
# Safe beside a running stack: it uses its own state folder (under a fresh 0700 folder) and
# its own ports (FIRSTCOME_STACK_PORT_OFFSET), starts only `postgres` there, stops only that
# and removes what it created. Needs root (PostgreSQL runs as the postgres OS user).
# Output: `ok - ...` / `not ok - ...` lines, then `N passed, M failed`; exits 1 on any failure.
set -euo pipefail

STACK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin/stack"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "$(id -u)" != 0 ]]; then
  echo "ok - skipped: not root (PostgreSQL runs as this user, any folder it owns is reachable)"
  finish
  exit 0
fi

export FIRSTCOME_STACK_PORT_OFFSET="${UNREACHABLE_TEST_PORT_OFFSET:-2000}"
PORT=$((5432 + FIRSTCOME_STACK_PORT_OFFSET))
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  not_ok "port $PORT is free for this test (set UNREACHABLE_TEST_PORT_OFFSET)"
  finish
  exit 1
fi

HOME_LIKE="$(mktemp -d /tmp/stack-unreachable.XXXXXX)" # mktemp makes it 0700, like /root
export FIRSTCOME_STATE_DIR="$HOME_LIKE/clone/.stack"
mkdir -p "$FIRSTCOME_STATE_DIR"
PG_URL="postgres://firstcome:firstcome@127.0.0.1:$PORT/firstcome"
pg_dir=""
cleanup() {
  "$STACK" down postgres >/dev/null 2>&1 || true
  [[ -n "$pg_dir" && "$pg_dir" == /var/lib/firstcome/* ]] && rm -rf "$pg_dir"
  rm -rf "$HOME_LIKE"
}
trap cleanup EXIT

check "the test folder is closed to other users (mode 700)" test "$(stat -c %a "$HOME_LIKE")" == 700
check "postgres OS user cannot enter the state folder" bash -c '! runuser -u postgres -- test -x "$1"' _ "$FIRSTCOME_STATE_DIR"
pg_dir="$("$STACK" dirs | awk '$1 == "postgres" { print $2 }')"
check "stack dirs puts the PostgreSQL clusters outside ($pg_dir)" \
  bash -c '[[ "$1" == /var/lib/firstcome/* ]]' _ "$pg_dir"

if out="$("$STACK" up postgres 2>&1)"; then ok "up postgres"; else echo "$out" | sed 's/^/    /'; not_ok "up postgres"; fi
check "no 'Permission denied' on the way" bash -c '! grep -q "Permission denied" <<<"$1"' _ "${out:-}"
check "the state folder links to the cluster folder" \
  test "$(readlink "$FIRSTCOME_STATE_DIR/postgres")" == "$pg_dir/postgres"
check "the cluster folder names its state folder" test "$(cat "$pg_dir/owner" 2>/dev/null)" == "$FIRSTCOME_STATE_DIR"
check "status: running on port $PORT" bash -c '"$1" status postgres | grep -Eq "^postgres +running +pid [0-9]+ +port $2$"' _ "$STACK" "$PORT"
check "postgres: write marker row" psql -X -q -v ON_ERROR_STOP=1 "$PG_URL" \
  -c "CREATE TABLE unreachable_marker (token text); INSERT INTO unreachable_marker VALUES ('kept')"
check "down postgres" "$STACK" down postgres
if out="$("$STACK" up postgres 2>&1)"; then ok "up postgres again"; else echo "$out" | sed 's/^/    /'; not_ok "up postgres again"; fi
check "the same cluster (no second initdb)" bash -c '! grep -q initdb <<<"$1"' _ "${out:-}"
check "postgres: marker row still there" \
  test "$(psql -X -q -t -A "$PG_URL" -c "SELECT token FROM unreachable_marker" 2>/dev/null)" == kept

finish
