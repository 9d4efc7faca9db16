#!/usr/bin/env bash
# The opening-rush drill, in one command (docs/drill.md; results in docs/measurements/).
#
#   bash scripts/drill.sh [--members N] [--stock N] [--peak-rate R] [--connections C]
#                         [--wrk-secs S] [--out docs/drill]
#                         [--waiting-room [--waiting-room-rate R] [--waiting-room-burst B]
#                          [--pre-queue fifo|shuffle]] [--max-wait-secs S]
#                         [--baselines-only | --rush-only] [--debug]
#
# On the local stack, under its own topic prefix (`drill-<stamp>.`, so its
# consumer groups never share partitions with a demo running beside it):
#   1. stack up, release build (--debug: debug), migrate, topics + schemas
#      for the prefix;
#   2. baselines in the same run, the service measured alone as the issue
#      measured it: the bare axum handler (bench/bare_ingest) and ingest
#      (under `drill-<stamp>-base.`, a prefix no consumer reads) on its accept
#      path (an event whose stock never runs out, every request a new member)
#      and refusal path (425, no Redis or Kafka) under wrk, with a CPU profile
#      of ingest (perf) while it accepts; Kafka's ProducerPerformance;
#      redis-benchmark of the admit script (EVALSHA, one request per call);
#   3. the rush, `firstcome-lab drill`: it seeds the members, starts every
#      service as its own process from typed settings (ingest,
#      stock-processor, recorder, sender, provider-sim at 2,000 calls/s),
#      fires the rush (open loop, ramp to the peak at the opening instant,
#      hold, decline), waits for the pipeline, writes report.json and
#      rush.png into --out with the baselines and each service's peak RSS,
#      and stops every process it started;
#   4. stops what it started itself (the baselines' processes), deletes the
#      run's topics and Redis keys.
#
# --rush-only skips step 2 (the report reuses $OUT/baselines.json): the
# rush's correctness figures (FCFS fidelity, entries admitted, invariants)
# without the quarter hour of baselines; without $OUT/baselines.json the
# report has no ratios.
# --baselines-only stops after step 2 (ingest's ratios to the baselines, its
# CPU per entry and the profile, in $OUT/baselines.json): the quick loop
# while working on the hot path.
# --debug builds and runs the debug binaries: a quick check that the drill
# runs end to end on a small rush, not a measurement.
#
# With --waiting-room (or FIRSTCOME_WAITING_ROOM__ENABLED=true in the
# environment, with its RATE_PER_SEC / BURST / PRE_QUEUE), the baselines still
# measure ingest without it; the rush's ingest starts with the waiting room on
# (the baselines' does not), and the rush keeps the members it puts in line asking again
# (up to --max-wait-secs after the last arrival) and reports the line. The
# rush's services get no FIRSTCOME_* variables from here: `firstcome-lab
# drill` builds their settings (lab/src/service_settings.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

MEMBERS=880000        # + 10 % doubles + the early crowd ≈ 1,000,000 requests
STOCK=10000
PEAK_RATE=20000
CONNECTIONS=512
RAMP_SECS=10
DECLINE_SECS=10
WRK_SECS=30
WRK_CONNECTIONS=256
OUT=docs/drill
WRK_PREFIX=w
# The waiting room is for the rush only: taken out of the environment here,
# so the baselines' ingest never sees it.
WAITING_ROOM=${FIRSTCOME_WAITING_ROOM__ENABLED:-false}
WR_RATE=${FIRSTCOME_WAITING_ROOM__RATE_PER_SEC:-}
WR_BURST=${FIRSTCOME_WAITING_ROOM__BURST:-}
WR_PRE_QUEUE=${FIRSTCOME_WAITING_ROOM__PRE_QUEUE:-}
unset FIRSTCOME_WAITING_ROOM__ENABLED FIRSTCOME_WAITING_ROOM__RATE_PER_SEC FIRSTCOME_WAITING_ROOM__BURST \
  FIRSTCOME_WAITING_ROOM__PRE_QUEUE
MAX_WAIT_SECS=60
BASELINES_ONLY=false
RUSH_ONLY=false
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --members) MEMBERS="$2"; shift 2 ;;
    --stock) STOCK="$2"; shift 2 ;;
    --peak-rate) PEAK_RATE="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --ramp-secs) RAMP_SECS="$2"; shift 2 ;;
    --decline-secs) DECLINE_SECS="$2"; shift 2 ;;
    --wrk-secs) WRK_SECS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --wrk-prefix) WRK_PREFIX="$2"; shift 2 ;;
    --waiting-room) WAITING_ROOM=true; shift ;;
    --waiting-room-rate) WR_RATE="$2"; shift 2 ;;
    --waiting-room-burst) WR_BURST="$2"; shift 2 ;;
    --pre-queue) WR_PRE_QUEUE="$2"; shift 2 ;;
    --max-wait-secs) MAX_WAIT_SECS="$2"; shift 2 ;;
    --baselines-only) BASELINES_ONLY=true; shift ;;
    --rush-only) RUSH_ONLY=true; shift ;;
    --debug) PROFILE=debug; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if [ "$RUSH_ONLY" = false ]; then
  command -v wrk >/dev/null && command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk linux-perf >/dev/null; }
fi
ensure_build_deps
stack_up

step "building $PROFILE binaries"
BUILD=(-p ingest -p stock-processor -p recorder -p sender -p provider-sim -p firstcome-cli -p firstcome-lab)
[ "$RUSH_ONLY" = false ] && BUILD+=(-p bench)
[ "$PROFILE" = release ] && BUILD+=(--release)
cargo build --locked "${BUILD[@]}"
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE

STAMP=$(date -u +%Y%m%d%H%M%S)
# The stack's administrators (least privilege: Redis' default user is off,
# Kafka authenticates every client): the drill's own set-up and baselines.
REDIS_ADMIN=(redis-cli --user admin --pass firstcome_admin --no-auth-warning)
redis_cli() { "${REDIS_ADMIN[@]}" "$@"; }
KAFKA_ADMIN_CONFIG=$(stack/bin/stack dirs | awk '$1 == "kafka-admin" {print $2}')
WORK=.stack/drill/$STAMP
mkdir -p "$WORK" "$OUT"
export FIRSTCOME_KAFKA__TOPIC_PREFIX="drill-$STAMP."
export FIRSTCOME_TELEMETRY__LOG_FILTER="${FIRSTCOME_TELEMETRY__LOG_FILTER:-info,rdkafka=warn}"
bootstrap_pipeline "$BIN/firstcome"
# The baselines' ingest writes under a prefix of its own that no consumer
# reads: its accept path is measured alone, as the issue measured it, not
# against the stock stage, recorder and sender working through its entries
# (every one of them a winner of a stock that never runs out).
BASE_PREFIX="drill-$STAMP-base."
if [ "$RUSH_ONLY" = false ]; then
  FIRSTCOME_KAFKA__TOPIC_PREFIX=$BASE_PREFIX "$BIN/firstcome" topics create
  FIRSTCOME_KAFKA__TOPIC_PREFIX=$BASE_PREFIX "$BIN/firstcome" schemas register
fi

# The baselines' processes; the rush's are firstcome-lab drill's, which stops
# them itself (also on SIGINT/SIGTERM).
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # The drill's data is in its report: free the disk and Redis' memory.
  for ev in "${ACCEPT_EVENT:-}" "${EARLY_EVENT:-}" "${SOLD_OUT_EVENT:-}" "${RUSH_EVENT:-}"; do
    [ -n "$ev" ] && redis_cli --scan --pattern "fc:{$ev}:*" | xargs -r "${REDIS_ADMIN[@]}" DEL >/dev/null
  done
  stack/bin/stack topics --delete --topic "drill-$STAMP.*" >/dev/null 2>&1 || true
  rm -f "$WORK"/tokens*.txt "$WORK"/perf-*.data
}
trap stop_all EXIT

start() { # name, then the command; env before it
  local name="$1"; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  eval "PID_${name//-/_}=$!"
}
wait_http() { # url
  for _ in $(seq 1 120); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.5; done
  echo "no answer from $1" >&2; return 1
}

INGEST=http://127.0.0.1:8380
RUSH_EVENT="drill-rush-$STAMP"
if [ "$RUSH_ONLY" = true ]; then
  # The rush alone, against the last baselines measured (the report's ratios use them).
  if [ -f "$OUT/baselines.json" ]; then cp "$OUT/baselines.json" "$WORK/baselines.json"; fi
else
step "starting the baselines' ingest and the bare handler (logs in $WORK)"
FIRSTCOME_KAFKA__TOPIC_PREFIX=$BASE_PREFIX FIRSTCOME_HTTP__PORT=8380 FIRSTCOME_OPS__PORT=9380 \
  start ingest-base "$BIN/ingest"
start bare "$BIN/bare_ingest" --port 8180
wait_http http://127.0.0.1:9380/healthz

step "seeding the wrk members"
# Their own product: the accept event's eligible set is them alone.
WRK_MEMBERS=$(( WRK_SECS * 20000 ))
"$BIN/firstcome" members seed "$WRK_MEMBERS" --prefix "$WRK_PREFIX" --eligible-ratio 1.0 --product drill-wrk
"$BIN/mint_tokens" --prefix "$WRK_PREFIX" --count "$WRK_MEMBERS" >"$WORK/tokens.txt"

ACCEPT_EVENT="drill-accept-$STAMP"
EARLY_EVENT="drill-early-$STAMP"
SOLD_OUT_EVENT="drill-sold-out-$STAMP"
"$BIN/firstcome" event create --id "$ACCEPT_EVENT" --product drill-wrk --total 100000000 --close-at +2h
# Nobody is eligible for the early event: a 425 is answered before eligibility.
"$BIN/firstcome" event create --id "$EARLY_EVENT" --product drill-nobody --total 10 --open-at +2h --close-at +3h

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wrk_run() { # name url event seconds
  TOKENS="${TOKENS_FILE:-$WORK/tokens.txt}" EVENT="$3" THREADS=2 \
    wrk -t2 -c"$WRK_CONNECTIONS" -d"$4"s --latency -s scripts/drill/entries.lua "$2" >"$WORK/wrk-$1.txt" 2>&1
}
# wrk's answer as {"per_sec", "non_2xx", "p50_ms", "p99_ms"} (scripts/drill/wrk_summary.py):
# its latency distribution, and the rate of 2xx answers only when only_2xx is 1.
wrk_json() { # name only_2xx [cpu ticks]
  local flags=()
  [ "$2" = 1 ] && flags+=(--only-2xx)
  [ -n "${3:-}" ] && flags+=(--cpu-ticks "$3")
  python3 scripts/drill/wrk_summary.py "$WORK/wrk-$1.txt" "${flags[@]}"
}

step "baseline: bare axum handler of ingest's route shape (wrk, ${WRK_SECS}s)"
wrk_run bare http://127.0.0.1:8180 "$ACCEPT_EVENT" "$WRK_SECS"
BARE=$(wrk_json bare 1); echo "$BARE"

step "ingest accept path (wrk, ${WRK_SECS}s, every request a new eligible member) with a CPU profile"
before=$(cpu_ticks "$PID_ingest_base")
# DWARF call stacks (Rust release builds keep no frame pointers): at most
# 10 s at 299 Hz, in the middle of the run.
PERF_SECS=$(( WRK_SECS / 2 > 10 ? 10 : WRK_SECS / 2 ))
( sleep $(( WRK_SECS / 4 )); perf record -F 299 --call-graph dwarf,16384 -p "$PID_ingest_base" \
    -o "$WORK/perf-accept.data" -- sleep "$PERF_SECS" >/dev/null 2>&1 ) &
PERF=$!
wrk_run ingest-accept "$INGEST" "$ACCEPT_EVENT" "$WRK_SECS"
after=$(cpu_ticks "$PID_ingest_base")
wait "$PERF" || true
ACCEPT=$(wrk_json ingest-accept 1 "$(( after - before ))"); echo "$ACCEPT"
perf report -i "$WORK/perf-accept.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//' | head -60 >"$OUT/profile-accept.txt" || true
perf script -i "$WORK/perf-accept.data" 2>/dev/null | python3 scripts/drill/profile_by_area.py \
  >"$OUT/profile-accept-areas.txt" || true
cat "$OUT/profile-accept-areas.txt"

step "ingest refusal path: 425 before the opening, no Redis, no Kafka (wrk, 15s)"
wrk_run ingest-refusal "$INGEST" "$EARLY_EVENT" 15
REFUSAL=$(wrk_json ingest-refusal 0); echo "$REFUSAL"

step "ingest refusal path: 410 after sell-out to members who never entered (the admit script, no Kafka; wrk, 15s)"
# Sold out as the stock stage leaves it: the counter at zero. The first
# answer tells ingest, which from then on admits nobody new (and still tells
# entrants 409 and non-buyers 403 from the script).
"$BIN/firstcome" event create --id "$SOLD_OUT_EVENT" --product drill-wrk --total 1 --close-at +2h
redis_cli SET "fc:{$SOLD_OUT_EVENT}:stock" 0 >/dev/null
wrk_run ingest-sold-out "$INGEST" "$SOLD_OUT_EVENT" 15
SOLD_OUT=$(wrk_json ingest-sold-out 0); echo "$SOLD_OUT"

step "ingest refusal paths: 404 for an unknown event, 401 for a token that does not verify (wrk, 10s each)"
wrk_run ingest-unknown-event "$INGEST" "drill-no-such-event-$STAMP" 10
UNKNOWN_EVENT=$(wrk_json ingest-unknown-event 0); echo "$UNKNOWN_EVENT"
# The same members' tokens with their signature's last characters changed.
head -n 200000 "$WORK/tokens.txt" | sed -E 's/.{4}$/AAAA/' >"$WORK/tokens-forged.txt"
TOKENS_FILE="$WORK/tokens-forged.txt" wrk_run ingest-unauthorized "$INGEST" "$ACCEPT_EVENT" 10
UNAUTHORIZED=$(wrk_json ingest-unauthorized 0); echo "$UNAUTHORIZED"

step "baseline: Kafka ProducerPerformance (200-byte records, acks=all, idempotent, lz4)"
stack/bin/stack topics --create --if-not-exists --topic "drill-$STAMP.perf" --partitions 12 \
  --replication-factor 1 >/dev/null
stack/bin/stack kafka-run org.apache.kafka.tools.ProducerPerformance --topic "drill-$STAMP.perf" \
  --num-records 1000000 --record-size 200 --throughput -1 --producer.config "$KAFKA_ADMIN_CONFIG" \
  --producer-props bootstrap.servers=127.0.0.1:9092 acks=all enable.idempotence=true compression.type=lz4 \
  linger.ms=5 batch.size=65536 >"$WORK/kafka-perf.txt" 2>&1
KAFKA=$(python3 - "$WORK/kafka-perf.txt" <<'EOF'
import json, re, sys
last = [l for l in open(sys.argv[1]) if "records sent" in l][-1]
rate = float(re.search(r"([\d.]+) records/sec", last).group(1))
avg = float(re.search(r"([\d.]+) ms avg latency", last).group(1))
p50 = re.search(r"(\d+) ms 50th", last); p99 = re.search(r"(\d+) ms 99th", last)
print(json.dumps({"per_sec": rate, "avg_ms": avg, "p50_ms": float(p50.group(1)) if p50 else None,
                  "p99_ms": float(p99.group(1)) if p99 else None}))
EOF
); echo "$KAFKA"
stack/bin/stack topics --delete --topic "drill-$STAMP.perf" >/dev/null 2>&1 || true

step "baseline: redis-benchmark of the admit script (EVALSHA, 64 clients, new members)"
REDIS_EVENT="drill-redis-$STAMP"
K="fc:{$REDIS_EVENT}"
# The script as ingest sends it: prelude + admit (platform::scripts::ADMIT).
ADMIT_SHA=$(cat platform/lua/prelude.lua platform/lua/admit.lua | redis_cli -x SCRIPT LOAD)
redis_cli HSET "$K:meta" status open open_at_ms 0 close_at_ms 99999999999999 for_sale 1000000000 >/dev/null
redis_cli SET "$K:stock" 1000000000 >/dev/null
redis_cli EVAL "for i = 0, 999999 do redis.call('SADD', KEYS[1], string.format('%012d', i)) end" 1 "$K:eligible" >/dev/null
redis-benchmark --user admin -a firstcome_admin -q -n 300000 -c 64 -r 1000000 --csv \
  EVALSHA "$ADMIT_SHA" 10 "$K:meta" "$K:eligible" "$K:entered" "$K:entries" "$K:ticket" "$K:tickets" \
  "$K:frontier" "$K:pending" "$K:holes" "$K:settle" \
  60000 120000 fc:event-state "$REDIS_EVENT" 0 250 __rand_int__ "e-__rand_int__" 1 >"$WORK/redis-admit.csv" 2>&1
REDIS=$(python3 - "$WORK/redis-admit.csv" <<'EOF'
import csv, json, sys
rows = list(csv.reader(open(sys.argv[1])))
header, row = rows[0], rows[-1]
d = dict(zip(header, row))
print(json.dumps({"per_sec": float(d["rps"]), "p50_ms": float(d.get("p50_latency_ms", 0)),
                  "p99_ms": float(d.get("p99_latency_ms", 0))}))
EOF
); echo "$REDIS"
redis_cli DEL "$K:meta" "$K:stock" "$K:eligible" "$K:entered" "$K:entries" "$K:ticket" "$K:tickets" \
  "$K:frontier" "$K:pending" "$K:holes" >/dev/null

cat >"$WORK/baselines.json" <<EOF
{"bare": $BARE, "ingest_accept": $ACCEPT, "ingest_refusal": $REFUSAL, "ingest_sold_out": $SOLD_OUT,
 "ingest_unknown_event": $UNKNOWN_EVENT, "ingest_unauthorized": $UNAUTHORIZED, "kafka_produce": $KAFKA, "redis_admit": $REDIS}
EOF
cp "$WORK/baselines.json" "$OUT/baselines.json"
kill "$PID_ingest_base" 2>/dev/null || true
wait "$PID_ingest_base" 2>/dev/null || true
fi
if [ "$BASELINES_ONLY" = true ]; then
  cp "$WORK"/wrk-*.txt "$WORK/kafka-perf.txt" "$WORK/redis-admit.csv" "$OUT/" 2>/dev/null || true
  step "done: $OUT/baselines.json, $OUT/profile-accept.txt (logs in $WORK)"
  exit 0
fi

RUSH=(--members "$MEMBERS" --stock "$STOCK" --peak-rate "$PEAK_RATE" --connections "$CONNECTIONS"
  --ramp-secs "$RAMP_SECS" --decline-secs "$DECLINE_SECS" --max-wait-secs "$MAX_WAIT_SECS" --drain-secs 300
  --event-id "$RUSH_EVENT" --log-dir "$WORK" --out "$OUT")
[ -f "$WORK/baselines.json" ] && RUSH+=(--baselines "$WORK/baselines.json")
if [ "$WAITING_ROOM" = true ]; then
  RUSH+=(--waiting-room)
  [ -n "$WR_RATE" ] && RUSH+=(--waiting-room-rate "$WR_RATE")
  [ -n "$WR_BURST" ] && RUSH+=(--waiting-room-burst "$WR_BURST")
  [ -n "$WR_PRE_QUEUE" ] && RUSH+=(--pre-queue "$WR_PRE_QUEUE")
fi
step "the rush: $MEMBERS members against $STOCK units, peak ${PEAK_RATE}/s, $CONNECTIONS connections (firstcome-lab drill)"
# Exit 1 when an invariant broke: the artifacts are kept all the same.
STATUS=0
"$BIN/firstcome-lab" drill "${RUSH[@]}" || STATUS=$?
cp "$WORK"/wrk-*.txt "$WORK/kafka-perf.txt" "$WORK/redis-admit.csv" "$OUT/" 2>/dev/null || true
uptime >"$OUT/load.txt"
step "done: $OUT/report.json, $OUT/rush.png (logs in $WORK)"
exit "$STATUS"
