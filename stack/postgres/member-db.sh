# shellcheck shell=bash
# The shop's member database as production runs it: a PostgreSQL primary and a
# streaming-replication hot standby (pg_basebackup -R, standby.signal, a physical
# replication slot per standby). Sourced by stack/bin/stack; the units here have the
# kind `memberdb`:
#
#   member-primary   127.0.0.1:5433  wal_level=replica; database `shop`; roles firstcome
#                                    (superuser, the shop's writer), firstcome_reader
#                                    (pg_read_all_data: what firstcome's services log in as
#                                    on a standby), replicator (REPLICATION)
#   member-standby   127.0.0.1:5434  hot standby of member-primary, slot `member_standby`
#   member-standby2  127.0.0.1:5435  a second hot standby (slot `member_standby2`), only
#                                    started when named: the standby-outage test stops it
#
# `members` = member-primary member-standby (part of the default set).

MEMBERDB_PRIMARY_PORT=5433
MEMBERDB_STANDBY_PORT=5434
MEMBERDB_STANDBY2_PORT=5435
MEMBERDB_DATABASE=shop
MEMBERDB_READER=firstcome_reader
MEMBERDB_READER_PASSWORD=firstcome_reader
MEMBERDB_REPLICATOR=replicator
MEMBERDB_REPLICATOR_PASSWORD=replicator

# Next to the main cluster's folder (wherever the stack keeps PostgreSQL data).
memberdb_dir() { echo "$(dirname "$(unit_dir postgres)")/$1"; }

memberdb_port() {
  case "$1" in
    member-primary) echo "$MEMBERDB_PRIMARY_PORT" ;;
    member-standby) echo "$MEMBERDB_STANDBY_PORT" ;;
    member-standby2) echo "$MEMBERDB_STANDBY2_PORT" ;;
  esac
}
memberdb_log() { echo "$(memberdb_dir "$1")/log/postgres.log"; }
memberdb_pidfile() { echo "$(memberdb_dir "$1")/data/postmaster.pid"; }
memberdb_marker() { echo "$(memberdb_dir "$1")/data"; }
memberdb_slot() { local s="${1//-/_}"; echo "$s"; }

memberdb_psql() {
  local u="$1"
  shift
  as_pg "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$(memberdb_dir "$u")/run" -p "$(memberdb_port "$u")" \
    -U postgres -d postgres "$@"
}

# The settings both roles share; the standby takes them as a hot standby.
memberdb_render_conf() {
  local u="$1" dir
  dir="$(memberdb_dir "$u")"
  cat >"$dir/postgresql.stack.conf.tmp" <<EOF
# Rendered by stack/postgres/member-db.sh.
listen_addresses = '127.0.0.1'
port = $(memberdb_port "$u")
unix_socket_directories = '$dir/run'
max_connections = 200
shared_buffers = 64MB
fsync = on
wal_level = replica
max_wal_senders = 8
max_replication_slots = 8
wal_keep_size = 256MB
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
log_timezone = 'UTC'
timezone = 'UTC'
EOF
  mv "$dir/postgresql.stack.conf.tmp" "$dir/postgresql.stack.conf"
  is_root && chown postgres:postgres "$dir/postgresql.stack.conf"
  # Point the cluster's own postgresql.conf at this unit's file (a base backup copies the
  # primary's include line).
  as_pg sed -i "/^include '.*postgresql.stack.conf'$/d" "$dir/data/postgresql.conf"
  echo "include '$dir/postgresql.stack.conf'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
}

memberdb_prepare_dir() {
  local dir="$1"
  mkdir -p "$dir/data" "$dir/log" "$dir/run"
  if is_root; then
    chown -R postgres:postgres "$dir"
    as_pg test -x "$dir" || die "the postgres OS user cannot reach $dir (a parent folder is not world-searchable); set FIRSTCOME_STATE_DIR elsewhere"
  fi
  chmod 700 "$dir/data"
}

memberdb_start() {
  local u="$1" dir bin
  dir="$(memberdb_dir "$u")" bin="$(pg_bin)"
  memberdb_prepare_dir "$dir"
  if [[ "$u" == member-primary ]]; then
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
      log "$u: initdb $dir/data"
      as_pg "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >"$dir/log/initdb.log" 2>&1 \
        || { show_log_tail "$dir/log/initdb.log"; die "$u: initdb failed"; }
    fi
  elif [[ ! -f "$dir/data/PG_VERSION" ]]; then
    memberdb_basebackup "$u"
  fi
  memberdb_render_conf "$u"
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log/postgres.log" -w -t "${READY_TIMEOUT[postgres]}" -s start \
    || { show_log_tail "$dir/log/postgres.log"; die "$u did not start"; }
  [[ "$u" == member-primary ]] && memberdb_setup
  return 0
}

# Roles and the shop database on the primary (idempotent; standbys get them by replay).
memberdb_setup() {
  memberdb_psql member-primary <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN SUPERUSER CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$MEMBERDB_READER') THEN
    CREATE ROLE $MEMBERDB_READER LOGIN PASSWORD '$MEMBERDB_READER_PASSWORD' IN ROLE pg_read_all_data;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$MEMBERDB_REPLICATOR') THEN
    CREATE ROLE $MEMBERDB_REPLICATOR LOGIN REPLICATION PASSWORD '$MEMBERDB_REPLICATOR_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $MEMBERDB_DATABASE OWNER $PG_USER'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$MEMBERDB_DATABASE')
\gexec
SQL
}

# A fresh standby: a base backup of the primary through its own replication slot
# (-C creates it, -R writes standby.signal and primary_conninfo).
memberdb_basebackup() {
  local u="$1" dir slot
  dir="$(memberdb_dir "$u")" slot="$(memberdb_slot "$u")"
  wait_ready member-primary >/dev/null
  # A slot left by an earlier copy of this standby (its data folder was removed).
  memberdb_psql member-primary -c \
    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active" >/dev/null
  log "$u: pg_basebackup from member-primary (slot $slot)"
  rm -rf "$dir/data" && memberdb_prepare_dir "$dir"
  as_pg env PGPASSWORD="$MEMBERDB_REPLICATOR_PASSWORD" "$(pg_bin)/pg_basebackup" \
    -h 127.0.0.1 -p "$MEMBERDB_PRIMARY_PORT" -U "$MEMBERDB_REPLICATOR" -D "$dir/data" \
    -R -C -S "$slot" -X stream -c fast >"$dir/log/basebackup.log" 2>&1 \
    || { show_log_tail "$dir/log/basebackup.log"; rm -rf "$dir/data"; die "$u: pg_basebackup failed"; }
  [[ -f "$dir/data/standby.signal" ]] || die "$u: no standby.signal after pg_basebackup -R"
}

# Ready: accepts connections; a standby also streams from the primary.
memberdb_ready() {
  local u="$1"
  "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$(memberdb_port "$u")" || return 1
  [[ "$u" == member-primary ]] && return 0
  [[ "$(memberdb_psql "$u" -t -A -c \
    "SELECT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')" 2>/dev/null)" == t ]]
}

# The URLs the application reads (`stack env`).
memberdb_env() {
  cat <<EOF
export FIRSTCOME_REPLICA__URL=postgres://$MEMBERDB_READER:$MEMBERDB_READER_PASSWORD@127.0.0.1:$MEMBERDB_STANDBY_PORT/$MEMBERDB_DATABASE
export FIRSTCOME_MEMBER_PRIMARY__URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$MEMBERDB_PRIMARY_PORT/$MEMBERDB_DATABASE
EOF
}
