#!/usr/bin/env bash
# The member database's streaming replication, against the real clusters:
#   - `stack up members` is idempotent; both standbys are in recovery with standby.signal;
#   - each standby streams through its own active replication slot on the primary;
#   - a row written on the primary is replayed on the standbys (LSN compared);
#   - the standby refuses writes; the reader role reads but cannot write the primary.
# Leaves member-primary, member-standby and member-standby2 up.
set -euo pipefail

STACK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin/stack"
PRIMARY="postgres://firstcome:firstcome@127.0.0.1:5433/shop"
STANDBY="postgres://firstcome_reader:firstcome_reader@127.0.0.1:5434/shop"
STANDBY2="postgres://firstcome_reader:firstcome_reader@127.0.0.1:5435/shop"
READER_ON_PRIMARY="postgres://firstcome_reader:firstcome_reader@127.0.0.1:5433/shop"
TOKEN="marker-$(date +%s%N)"

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$1" -c "$2"; }

check "up members member-standby2" "$STACK" up members member-standby2
up2="$("$STACK" up members member-standby2 2>&1)" || true
check "second up started nothing" bash -c '! grep -q ": started" <<<"$1"' _ "$up2"
check "standby is in recovery" test "$(q "$STANDBY" 'SELECT pg_is_in_recovery()')" == t
check "standby2 is in recovery" test "$(q "$STANDBY2" 'SELECT pg_is_in_recovery()')" == t
check "primary is not" test "$(q "$PRIMARY" 'SELECT pg_is_in_recovery()')" == f
check "both slots active on the primary" test "$(q "$PRIMARY" \
  "SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('member_standby','member_standby2') AND active")" == 2
check "two walsenders streaming" test "$(q "$PRIMARY" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" -ge 2

check "write a marker on the primary" q "$PRIMARY" \
  "CREATE TABLE IF NOT EXISTS stack_replication_marker (token text PRIMARY KEY); INSERT INTO stack_replication_marker VALUES ('$TOKEN')"
lsn="$(q "$PRIMARY" 'SELECT pg_current_wal_lsn()')"
replayed() { [[ "$(q "$1" "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" == t ]]; }
wait_replayed() { local i; for i in $(seq 1 100); do replayed "$1" && return 0; sleep 0.1; done; return 1; }
check "standby replayed up to $lsn" wait_replayed "$STANDBY"
check "standby2 replayed up to $lsn" wait_replayed "$STANDBY2"
check "marker readable on the standby" test "$(q "$STANDBY" "SELECT count(*) FROM stack_replication_marker WHERE token = '$TOKEN'")" == 1
check "the standby refuses writes" bash -c '! psql -X -q "$1" -c "INSERT INTO stack_replication_marker VALUES ('"'x'"')" 2>/dev/null' _ "$STANDBY"
check "the reader role cannot write the primary" bash -c '! psql -X -q "$1" -c "INSERT INTO stack_replication_marker VALUES ('"'y'"')" 2>/dev/null' _ "$READER_ON_PRIMARY"

finish
