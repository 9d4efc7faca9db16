#!/usr/bin/env bash
# Redis with a replica and three Sentinels (`stack up redis-sentinel`), against the real servers:
#   - `up redis-sentinel` is idempotent; the three Sentinels agree on one primary;
#   - the other data node replicates from it (link up) and AOF is on for both;
#   - a write on the primary reaches the replica; the replica refuses writes;
#   - `stack env redis-sentinel` exports the Sentinels and the master name.
# Leaves the five units up (whichever node is the primary).
set -euo pipefail

STACK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin/stack"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cli() { redis-cli -h 127.0.0.1 -p "$@"; }
master_of() { cli "$1" --raw SENTINEL get-master-addr-by-name firstcome | tail -n 1; }

check "up redis-sentinel" "$STACK" up redis-sentinel
up2="$("$STACK" up redis-sentinel 2>&1)" || true
check "second up started nothing" bash -c '! grep -q ": started" <<<"$1"' _ "$up2"
primary="$(master_of 26380)"
check "the three Sentinels agree on the primary ($primary)" \
  test "$(master_of 26381)" == "$primary" -a "$(master_of 26382)" == "$primary"
replica=6380; [[ "$primary" == 6380 ]] && replica=6381
check "the primary answers as master" bash -c 'redis-cli -p "$1" ROLE | head -n 1 | grep -qx master' _ "$primary"
# A node the Sentinels just turned into a replica may still be syncing.
link_up() { redis-cli -p "$1" INFO replication | tr -d '\r' | grep -qx master_link_status:up; }
wait_link() { local i; for i in $(seq 1 150); do link_up "$1" && return 0; sleep 0.2; done; return 1; }
check "the replica's link to the primary is up" wait_link "$replica"
check "AOF on the primary" test "$(cli "$primary" CONFIG GET appendonly | tail -n 1)" == yes
check "AOF on the replica" test "$(cli "$replica" CONFIG GET appendonly | tail -n 1)" == yes
token="sentinel-test-$(date +%s%N)"
check "write on the primary" test "$(cli "$primary" SET stack:sentinel:marker "$token")" == OK
check "the replica acknowledged it (WAIT 1)" test "$(cli "$primary" WAIT 1 5000)" == 1
check "the replica has it" test "$(cli "$replica" GET stack:sentinel:marker)" == "$token"
check "the replica refuses writes" bash -c 'redis-cli -p "$1" SET x 1 | grep -q READONLY' _ "$replica"
check "env exports the Sentinels" bash -c '"$1" env redis-sentinel | grep -qx "export FIRSTCOME_REDIS__SENTINELS=127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382"' _ "$STACK"
check "env exports the master name" bash -c '"$1" env redis-sentinel | grep -qx "export FIRSTCOME_REDIS__MASTER_NAME=firstcome"' _ "$STACK"

finish
