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
# The data nodes have ACL users only (stack/redis/users.acl): the tests log in as admin.
node() { redis-cli --user admin --pass firstcome_admin --no-auth-warning -h 127.0.0.1 -p "$@"; }
master_of() { cli "$1" --raw SENTINEL get-master-addr-by-name firstcome | tail -n 1; }

check "up redis-sentinel" "$STACK" up redis-sentinel
up2="$("$STACK" up redis-sentinel 2>&1)" || true
check "second up started nothing" bash -c '! grep -q ": started" <<<"$1"' _ "$up2"
primary="$(master_of 26380)"
check "the three Sentinels agree on the primary ($primary)" \
  test "$(master_of 26381)" == "$primary" -a "$(master_of 26382)" == "$primary"
replica=6380; [[ "$primary" == 6380 ]] && replica=6381
check "the primary answers as master" bash -c 'redis-cli --user admin --pass firstcome_admin --no-auth-warning -p "$1" ROLE | head -n 1 | grep -qx master' _ "$primary"
# A node the Sentinels just turned into a replica may still be syncing.
link_up() { node "$1" INFO replication | tr -d '\r' | grep -qx master_link_status:up; }
wait_link() { local i; for i in $(seq 1 150); do link_up "$1" && return 0; sleep 0.2; done; return 1; }
check "the replica's link to the primary is up" wait_link "$replica"
check "AOF on the primary" test "$(node "$primary" CONFIG GET appendonly | tail -n 1)" == yes
check "AOF on the replica" test "$(node "$replica" CONFIG GET appendonly | tail -n 1)" == yes
token="sentinel-test-$(date +%s%N)"
check "write on the primary" test "$(node "$primary" SET stack:sentinel:marker "$token")" == OK
check "the replica acknowledged it (WAIT 1)" test "$(node "$primary" WAIT 1 5000)" == 1
check "the replica has it" test "$(node "$replica" GET stack:sentinel:marker)" == "$token"
check "the replica refuses writes" bash -c 'redis-cli --user admin --pass firstcome_admin --no-auth-warning -p "$1" SET x 1 | grep -q READONLY' _ "$replica"
check "no user: refused" bash -c 'redis-cli -p "$1" GET x | grep -q NOAUTH' _ "$primary"
check "ingest cannot set a stock counter" bash -c 'redis-cli --user ingest --pass firstcome_ingest --no-auth-warning -p "$1" SET "fc:{e}:stock" 9 | grep -q NOPERM' _ "$primary"
check "the replica syncs as its own user" bash -c 'redis-cli --user admin --pass firstcome_admin --no-auth-warning -p "$1" CONFIG GET masteruser | tail -n 1 | grep -qx replica' _ "$replica"
check "env exports the Sentinels" bash -c '"$1" env redis-sentinel | grep -qx "export FIRSTCOME_REDIS__SENTINELS=127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382"' _ "$STACK"
check "env exports the master name" bash -c '"$1" env redis-sentinel | grep -qx "export FIRSTCOME_REDIS__MASTER_NAME=firstcome"' _ "$STACK"

finish
