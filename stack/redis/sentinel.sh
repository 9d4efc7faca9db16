# shellcheck shell=bash
# Redis as production runs it: a primary, a replica and three Sentinels, AOF on both data
# nodes. Sourced by stack/bin/stack; `redis-sentinel` names the five units, only started
# when named (like kafka3):
#
#   redis-s1, redis-s2        127.0.0.1:6380, 6381   data nodes (kind `redisha`); the first
#                                                   start makes redis-s1 the primary, later
#                                                   starts follow whatever the Sentinels say
#   sentinel-1, -2, -3        127.0.0.1:26380..26382  (kind `sentinel`) monitor master
#                                                   `firstcome`, quorum 2, down after 1 s
#
# Sentinel rewrites its own config file (epochs, known replicas): it is rendered once.

REDISHA_MASTER_NAME=firstcome
REDISHA_NODES=(1 2)
REDISHA_SENTINELS=(1 2 3)
REDISHA_PORT_BASE=6379        # redis-sN listens on 6379+N
SENTINEL_PORT_BASE=26379      # sentinel-N listens on 26379+N
REDISHA_DOWN_AFTER_MS=1000
REDISHA_FAILOVER_TIMEOUT_MS=10000

redisha_units() {
  local n
  for n in "${REDISHA_NODES[@]}"; do echo "redis-s$n"; done
  for n in "${REDISHA_SENTINELS[@]}"; do echo "sentinel-$n"; done
}

redisha_dir() { echo "$STATE_DIR/redis-sentinel/$1"; }
redisha_port() { echo $((REDISHA_PORT_BASE + ${1#redis-s})); }
redisha_log() { echo "$(redisha_dir "$1")/log/redis.log"; }
redisha_pidfile() { echo "$(redisha_dir "$1")/redis.pid"; }
redisha_marker() { echo ":$(redisha_port "$1")"; }
sentinel_dir() { redisha_dir "$1"; }
sentinel_port() { echo $((SENTINEL_PORT_BASE + ${1#sentinel-})); }
sentinel_log() { echo "$(sentinel_dir "$1")/log/sentinel.log"; }
sentinel_pidfile() { echo "$(sentinel_dir "$1")/sentinel.pid"; }
sentinel_marker() { echo ":$(sentinel_port "$1")"; }

# `host port` of the primary as the first Sentinel that answers sees it; empty when none runs.
redisha_master_addr() {
  local n out
  for n in "${REDISHA_SENTINELS[@]}"; do
    out="$(redis-cli -h 127.0.0.1 -p "$(sentinel_port "sentinel-$n")" --raw \
      SENTINEL get-master-addr-by-name "$REDISHA_MASTER_NAME" 2>/dev/null | tr '\n' ' ')" || continue
    [[ "$out" =~ ^([0-9.]+)\ ([0-9]+) ]] && { echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"; return 0; }
  done
  return 0
}

redisha_start() {
  local u="$1" dir port master replicaof=""
  dir="$(redisha_dir "$u")" port="$(redisha_port "$u")"
  mkdir -p "$dir/data" "$dir/log"
  master="$(redisha_master_addr)"
  if [[ -n "$master" ]]; then
    [[ "${master#* }" != "$port" ]] && replicaof="replicaof ${master% *} ${master#* }"
  elif [[ "$u" != redis-s1 ]]; then
    replicaof="replicaof 127.0.0.1 $(redisha_port redis-s1)"
  fi
  cat >"$dir/redis.conf" <<CONF
# Rendered by stack/redis/sentinel.sh at every start (the role follows the Sentinels).
bind 127.0.0.1
port $port
protected-mode yes
daemonize yes
pidfile $dir/redis.pid
logfile $dir/log/redis.log
dir $dir/data
appendonly yes
appendfsync everysec
appendfilename "appendonly.aof"
save 3600 1 300 100 60 10000
# Never evict (an event's keys carry a TTL); the services refuse any other policy.
maxmemory-policy noeviction
replica-read-only yes
replica-serve-stale-data yes
# A replica that (re)joins after a failover syncs at once (the default waits 5 s).
repl-diskless-sync-delay 0
# Users and their rights (no default user); a replica syncs as \`replica\`.
aclfile $REDIS_ACL_FILE
masteruser replica
masterauth firstcome_replica
$replicaof
CONF
  redis-server "$dir/redis.conf" || { show_log_tail "$dir/log/redis.log"; die "$u did not start"; }
  local i
  for i in {1..50}; do [[ -s "$dir/redis.pid" ]] && break; sleep 0.1; done
}

# Ready: answers; a replica also has its link to the primary up.
redisha_ready() {
  local port role
  port="$(redisha_port "$1")"
  [[ "$(redis_admin_cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]] || return 1
  role="$(redis_admin_cli -h 127.0.0.1 -p "$port" info replication 2>/dev/null | tr -d '\r')"
  grep -q '^role:master' <<<"$role" || grep -q '^master_link_status:up' <<<"$role"
}

sentinel_start() {
  local u="$1" dir port
  dir="$(sentinel_dir "$u")" port="$(sentinel_port "$u")"
  mkdir -p "$dir/log"
  if [[ ! -s "$dir/sentinel.conf" ]]; then
    cat >"$dir/sentinel.conf" <<CONF
# Rendered once by stack/redis/sentinel.sh; Sentinel rewrites it with its state.
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/sentinel.pid
logfile $dir/log/sentinel.log
dir $dir
sentinel resolve-hostnames no
sentinel monitor $REDISHA_MASTER_NAME 127.0.0.1 $(redisha_port redis-s1) 2
sentinel down-after-milliseconds $REDISHA_MASTER_NAME $REDISHA_DOWN_AFTER_MS
sentinel failover-timeout $REDISHA_MASTER_NAME $REDISHA_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $REDISHA_MASTER_NAME 1
sentinel auth-user $REDISHA_MASTER_NAME sentinel
sentinel auth-pass $REDISHA_MASTER_NAME firstcome_sentinel
CONF
  fi
  redis-server "$dir/sentinel.conf" --sentinel || { show_log_tail "$dir/log/sentinel.log"; die "$u did not start"; }
  local i
  for i in {1..50}; do [[ -s "$dir/sentinel.pid" ]] && break; sleep 0.1; done
  # A sentinel.conf written before the data nodes had users: the Sentinel logs in as
  # \`sentinel\` from now on (SENTINEL SET rewrites its file; idempotent).
  for i in {1..50}; do
    redis-cli -h 127.0.0.1 -p "$port" SENTINEL SET "$REDISHA_MASTER_NAME" auth-user sentinel auth-pass firstcome_sentinel \
      >/dev/null 2>&1 && break
    sleep 0.1
  done
}

sentinel_ready() {
  local out
  out="$(redis-cli -h 127.0.0.1 -p "$(sentinel_port "$1")" --raw \
    SENTINEL get-master-addr-by-name "$REDISHA_MASTER_NAME" 2>/dev/null)" || return 1
  [[ -n "$out" ]]
}

sentinel_env() {
  local n list=()
  for n in "${REDISHA_SENTINELS[@]}"; do list+=("127.0.0.1:$(sentinel_port "sentinel-$n")"); done
  cat <<ENV
export FIRSTCOME_REDIS__SENTINELS=$(IFS=,; echo "${list[*]}")
export FIRSTCOME_REDIS__MASTER_NAME=$REDISHA_MASTER_NAME
ENV
}
