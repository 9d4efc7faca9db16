#!/usr/bin/env bash
# ingest's accept path, before and after, beside the bare handler: two
# builds (or one build under two settings) of ingest measured side by side
# in one run, in interleaved rounds, with the bare axum handler of the same
# round as the ceiling; medians and ratios reported.
#
#   bash scripts/bench/accept-ab.sh [--base REV | --base-bin PATH] [--head-bin PATH] [--no-build]
#                                   [--base-env K=V]... [--head-env K=V]...
#                                   [--rounds N] [--secs S] [--sold-out-secs S] [--connections C] [--no-bare]
#                                   [--profile]
#   bash scripts/bench/accept-ab.sh --summarise .stack/ab/<stamp>   # the table of a run again
#
# --base (default c0fdc6c: the last commit before the third round of
# hot-path changes) is built in a git worktree under .stack/ab/ with its own
# target folder (a release build of ingest: several minutes on two cores the
# first time, cached after); --base-bin takes an ingest binary built
# already (its revision is what you say it is). The working tree's ingest,
# built into $CARGO_TARGET_DIR (default target/), is the "head", unless
# --head-bin names another binary. --no-build uses the tools (firstcome,
# mint_tokens, bare_ingest) and the head already in $CARGO_TARGET_DIR:
# while others edit the tree, a build of it may not compile.
# --base-env / --head-env set a variable for that variant's ingest only
# (e.g. --head-env FIRSTCOME_KAFKA__LINGER_MS=5 with --base-bin of the same
# build: one setting A/B).
#
# Each round starts each ingest afresh on the same port, under a topic
# prefix no consumer reads, and runs wrk against an event whose stock never
# runs out, every request a new eligible member; then (--sold-out-secs, 0 to
# skip) against a sold-out event, every request a member who never entered
# (410 from the admit script, no Kafka). The bare handler (bench/bare_ingest,
# the same tokens and bodies) is measured in each round too. The order of
# the variants rotates between rounds. Per run: entries (or answers)/s,
# wrk's p50/p99, and each process' CPU per answer (ingest, the broker,
# Redis, wrk; /proc/<pid>/stat over the middle of the run) and their sum,
# "box"; the broker's and Redis' background CPU (3 s before each run: the
# stack is shared with other tests) subtracted. Output: a table on stdout
# and .stack/ab/report.json. --profile: `perf record` of each variant's
# ingest during its accept run of the last round, by area of the code
# (scripts/drill/profile_by_area.py) in $WORK/profile-<variant>-areas.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/lib.sh

BASE=c0fdc6c
BASE_BIN=
BASE_ENV=()
HEAD_ENV=()
HEAD_BIN=
BUILD=true
ROUNDS=5
SECS=15
SOLD_OUT_SECS=8
CONNECTIONS=256
BARE=true
PROFILE=false
SUMMARISE=
while [ $# -gt 0 ]; do
  case "$1" in
    --base) BASE="$2"; shift 2 ;;
    --base-bin) BASE_BIN="$2"; shift 2 ;;
    --head-bin) HEAD_BIN="$2"; shift 2 ;;
    --no-build) BUILD=false; shift ;;
    --base-env) BASE_ENV+=("$2"); shift 2 ;;
    --head-env) HEAD_ENV+=("$2"); shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --sold-out-secs) SOLD_OUT_SECS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --no-bare) BARE=false; shift ;;
    --profile) PROFILE=true; shift ;;
    --summarise) SUMMARISE="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# The medians and ratios of a run's runs.jsonl: a table on stdout, the report as JSON.
summarise() { # runs.jsonl base-name head-name report.json [base-env] [head-env]
  python3 - "$@" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
report = {"base": sys.argv[2], "head": sys.argv[3], "base_env": sys.argv[5], "head_env": sys.argv[6],
          "runs": runs, "median": {}}
med = statistics.median
def medians(rs):
    out = {k: med(r[k] for r in rs) for k in ("per_sec", "p50_ms", "p99_ms", "ingest_cpu_us")}
    for proc in ("ingest", "kafka", "redis", "wrk", "box"):
        vals = [r["cpu_us_per_answer"].get(proc, 0.0) for r in rs]
        out[f"{proc}_us"] = med(vals)
    # Redis' commands per answer (a script's own commands counted each), and
    # its script calls apart: how many answers one call carries.
    cmds = [r.get("redis_commands_per_answer", {}) for r in rs]
    out["redis_commands"] = med(sum(v for k, v in c.items() if k not in ("info", "ping")) for c in cmds)
    out["redis_script_calls"] = med(sum(v for k, v in c.items() if k in ("evalsha", "eval")) for c in cmds)
    return out
for kind in ("accept", "sold_out", "bare"):
    for v in ("base", "head", "bare"):
        rs = [r for r in runs if r["kind"] == kind and r["variant"] == v]
        if rs:
            report["median"][f"{kind}/{v}"] = medians(rs)
m = report["median"]
# Ratios to the bare handler per round (the same round's ceiling), then their median.
bare = {r["round"]: r["per_sec"] for r in runs if r["kind"] == "bare"}
for kind in ("accept", "sold_out"):
    for v in ("base", "head"):
        rs = [r["per_sec"] / bare[r["round"]] for r in runs if r["kind"] == kind and r["variant"] == v and r["round"] in bare]
        if rs:
            m[f"{kind}/{v}"]["x_bare"] = med(rs)
# The accept run's mean step times (stages.jsonl beside runs.jsonl), medians.
import os
stages_file = os.path.join(os.path.dirname(sys.argv[1]), "stages.jsonl")
if os.path.exists(stages_file):
    stages = [json.loads(l) for l in open(stages_file) if l.strip()]
    for v in ("base", "head"):
        rs = [r["stage_mean_ms"] for r in stages if r["variant"] == v]
        if rs and f"accept/{v}" in m:
            for step in ("admit", "produce", "mark_accepted"):
                vals = [r[step] for r in rs if step in r]
                if vals:
                    m[f"accept/{v}"][f"{step}_ms"] = med(vals)
json.dump(report, open(sys.argv[4], "w"), indent=2)
b, h = m["accept/base"], m["accept/head"]
print(f"\n| median of {max(r['round'] for r in runs)} rounds | base {sys.argv[2]} {sys.argv[5]} | head {sys.argv[3]} {sys.argv[6]} | head / base |")
print("| --- | --- | --- | --- |")
rows = [("per_sec", "accepted entries/s"), ("x_bare", "… × the bare handler of the same round"), ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"), ("ingest_us", "ingest CPU µs per accepted entry"), ("kafka_us", "broker CPU µs per entry"),
        ("redis_us", "Redis CPU µs per entry"), ("wrk_us", "wrk CPU µs per entry"), ("box_us", "box (the four) µs per entry"),
        ("redis_commands", "Redis commands per entry"), ("redis_script_calls", "Redis script calls per entry"),
        ("admit_ms", "admit call, mean ms"), ("produce_ms", "produce to the ack, mean ms"),
        ("mark_accepted_ms", "accept mark, mean ms")]
for k, label in rows:
    if k in b and k in h:
        ratio = f"{h[k]/b[k]:.2f}" if b[k] else "–"
        print(f"| {label} | {b[k]:,.2f} | {h[k]:,.2f} | {ratio} |")
for kind, label in (("sold_out", "410 after sell-out"),):
    if f"{kind}/base" in m and f"{kind}/head" in m:
        sb, sh = m[f"{kind}/base"], m[f"{kind}/head"]
        print(f"| {label}: answers/s | {sb['per_sec']:,.0f} | {sh['per_sec']:,.0f} | {sh['per_sec']/sb['per_sec']:.2f} |")
        print(f"| {label}: ingest CPU µs per answer | {sb['ingest_us']:.1f} | {sh['ingest_us']:.1f} | {sh['ingest_us']/sb['ingest_us']:.2f} |")
        if "x_bare" in sb:
            print(f"| {label}: × bare | {sb['x_bare']:.3f} | {sh['x_bare']:.3f} | {sh['x_bare']/sb['x_bare']:.2f} |")
if "bare/bare" in m:
    bb = m["bare/bare"]
    print(f"| bare handler: req/s, p99 ms, box µs per request | {bb['per_sec']:,.0f}, {bb['p99_ms']:.1f}, {bb['box_us']:.1f} | | |")
EOF
}
if [ -n "$SUMMARISE" ]; then
  summarise "$SUMMARISE/runs.jsonl" base head "$SUMMARISE/report.json" "" ""
  exit 0
fi

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
ensure_build_deps
stack_up

TARGET=${CARGO_TARGET_DIR:-target}
AB=.stack/ab
mkdir -p "$AB"
if $BUILD; then
  step "building the head's ingest (the working tree) into $TARGET"
  cargo build --release --locked -p ingest -p firstcome-cli -p bench
fi
if [ -n "$BASE_BIN" ]; then
  BASE_SHA="bin:$(basename "$BASE_BIN")"
  BASE_PATH=$BASE_BIN
else
  BASE_SHA=$(git rev-parse --short "$BASE")
  step "building the base's ingest ($BASE_SHA)"
  if [ ! -d "$AB/src-$BASE_SHA" ]; then
    git worktree prune  # a worktree whose folder went with a stack reset
    git worktree add --detach "$AB/src-$BASE_SHA" "$BASE_SHA" >/dev/null
  fi
  (cd "$AB/src-$BASE_SHA" && CARGO_TARGET_DIR="$REPO/$AB/target-$BASE_SHA" cargo build --release --locked -p ingest)
  BASE_PATH="$AB/target-$BASE_SHA/release/ingest"
fi
# The head runs from a copy: another build into the same target folder
# while the rounds run must not change it under them.
STAMP=$(date -u +%Y%m%d%H%M%S)
WORK=$AB/$STAMP
mkdir -p "$WORK"
cp "${HEAD_BIN:-$TARGET/release/ingest}" "$WORK/ingest-head"
cp "$TARGET/release/bare_ingest" "$WORK/bare_ingest"
cp "$BASE_PATH" "$WORK/ingest-base"
declare -A BIN=([head]="$WORK/ingest-head" [base]="$WORK/ingest-base")
declare -A VENV=([head]="${HEAD_ENV[*]:-}" [base]="${BASE_ENV[*]:-}")

export FIRSTCOME_KAFKA__TOPIC_PREFIX="ab-$STAMP."
export FIRSTCOME_TELEMETRY__LOG_FILTER="${FIRSTCOME_TELEMETRY__LOG_FILTER:-info,rdkafka=warn}"
bootstrap_pipeline "$TARGET/release/firstcome"
REDIS_ADMIN=(redis-cli --user admin --pass firstcome_admin --no-auth-warning)
EVENT="ab-accept-$STAMP"
SOLD_OUT_EVENT="ab-sold-out-$STAMP"
INGEST_PID=
BARE_PID=
cleanup() {
  [ -n "$INGEST_PID" ] && kill "$INGEST_PID" 2>/dev/null && wait "$INGEST_PID" 2>/dev/null
  [ -n "$BARE_PID" ] && kill "$BARE_PID" 2>/dev/null && wait "$BARE_PID" 2>/dev/null
  for ev in "$EVENT" "$SOLD_OUT_EVENT"; do
    "${REDIS_ADMIN[@]}" --scan --pattern "fc:{$ev}:*" | xargs -r "${REDIS_ADMIN[@]}" DEL >/dev/null
  done
  stack/bin/stack topics --delete --topic "ab-$STAMP.*" >/dev/null 2>&1 || true
  rm -f "$WORK"/tokens*.txt "$WORK"/ingest-head "$WORK"/ingest-base "$WORK"/bare_ingest
}
trap cleanup EXIT

# A new member per request: enough for every accept run at 15,000/s (the
# bare runs reuse the first: the bare handler keeps no state).
PER_RUN=$(( SECS * 15000 ))
MEMBERS=$(( PER_RUN * ROUNDS * 2 ))
step "seeding $MEMBERS members (product ab-beans) and their tokens"
"$TARGET/release/firstcome" members seed "$MEMBERS" --prefix ab --eligible-ratio 1.0 --product ab-beans
"$TARGET/release/mint_tokens" --prefix ab --count "$MEMBERS" >"$WORK/tokens.txt"
"$TARGET/release/firstcome" event create --id "$EVENT" --product ab-beans --total 1000000000 --close-at +6h
# Sold out as admission leaves it: the tickets issued past for-sale + the
# line. Its members never entered: each request is the admit script's 410.
"$TARGET/release/firstcome" event create --id "$SOLD_OUT_EVENT" --product ab-beans --total 1 --close-at +6h
"${REDIS_ADMIN[@]}" SET "fc:{$SOLD_OUT_EVENT}:ticket" 1000000000 >/dev/null

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of every process of the stack and the load, by name.
snapshot() {
  # The main broker only (its server.properties under .stack/kafka/): the
  # three-broker cluster beside it (.stack/kafka3/) is another suite's, and
  # counting it made "the broker" mostly someone else's traffic.
  for pid in $(pgrep -f 'ab/[0-9]+/(ingest-|bare_ingest)|redis-server 127.0.0.1:6379|kafka.Kafka .*/\.stack/kafka/server\.properties|^wrk'); do
    [ -r "/proc/$pid/stat" ] && printf '%s %s %s\n' "$pid" "$(ticks "$pid")" "$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-200)"
  done
}
# Redis' commands so far, by name (`INFO commandstats`: a script's commands
# counted one by one), as "name calls" lines: what each answer asked of Redis.
commandstats() {
  "${REDIS_ADMIN[@]}" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p'
}
wait_http() { for _ in $(seq 1 120); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.5; done; return 1; }

# One wrk run against port $2 for event $3, $4 seconds, as run $1 (kind-variant-round);
# appends its summary to runs.jsonl. $5: the pid whose CPU is "the server's".
measure() {
  local name="$1" port="$2" event="$3" secs="$4" server_pid="$5" kind="$6" variant="$7" round="$8"
  local before after t0 t1
  # The stack is shared (other tests use the same broker and Redis): each
  # process' CPU over 3 s before the load is its background, subtracted.
  snapshot >"$WORK/idle-before.txt"; i0=$(date +%s.%N)
  sleep 3
  snapshot >"$WORK/idle-after.txt"; i1=$(date +%s.%N)
  before=$(ticks "$server_pid")
  TOKENS="$WORK/tokens-run.txt" EVENT="$event" THREADS=2 wrk -t2 -c"$CONNECTIONS" -d"${secs}s" --latency \
    -s scripts/drill/entries.lua "http://127.0.0.1:$port" >"$WORK/wrk-$name.txt" 2>&1 &
  local wrk_pid=$!
  local perf_pid=
  if $PROFILE && [ "$kind" = accept ] && [ "$round" = "$ROUNDS" ]; then
    # DWARF call stacks (release builds keep no frame pointers), the middle of the run.
    ( sleep 2; perf record -F 299 --call-graph dwarf,16384 -p "$server_pid" -o "$WORK/perf-$variant.data" \
        -- sleep $(( secs - 4 )) >/dev/null 2>&1 ) &
    perf_pid=$!
  fi
  # Every process' share over the middle of the run (wrk included).
  sleep 1; snapshot >"$WORK/cpu-before.txt"; commandstats >"$WORK/cmd-before.txt"; t0=$(date +%s.%N)
  sleep $(( secs - 2 )); snapshot >"$WORK/cpu-after.txt"; commandstats >"$WORK/cmd-after.txt"; t1=$(date +%s.%N)
  wait "$wrk_pid"
  [ -n "$perf_pid" ] && { wait "$perf_pid" || true; }
  after=$(ticks "$server_pid")
  python3 - "$WORK" "$name" "$kind" "$variant" "$round" "$(( after - before ))" "$t0" "$t1" "$i0" "$i1" >>"$WORK/runs.jsonl" <<'EOF'
import json, sys
sys.path.insert(0, "scripts/drill")
from wrk_summary import summary
work, name, kind, variant, rnd = sys.argv[1:6]
ticks, t0, t1, i0, i1 = int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9]), float(sys.argv[10])
wrk = summary(open(f"{work}/wrk-{name}.txt").read(), only_2xx=(kind == "accept"), cpu_ticks=ticks)
def load(file):
    out = {}
    for line in open(f"{work}/{file}"):
        pid, t, cmd = line.split(" ", 2)
        out[pid] = (int(t), cmd)
    return out
def shares(a, b, secs):
    out = {}
    for pid, (t, cmd) in b.items():
        if pid not in a: continue
        proc = next((n for k, n in [("ingest-", "ingest"), ("bare_ingest", "ingest"), ("redis-server", "redis"),
                                    ("java", "kafka"), ("wrk", "wrk")] if k in cmd), "other")
        out[proc] = out.get(proc, 0) + (t - a[pid][0]) / secs  # ticks/s = % of a core
    return out
loaded = shares(load("cpu-before.txt"), load("cpu-after.txt"), t1 - t0)
background = shares(load("idle-before.txt"), load("idle-after.txt"), i1 - i0)
# The broker's and Redis' background (others' tests, the controller) is not
# this load's: subtracted. ingest is idle before the load; wrk not running.
share = {k: max(v - (background.get(k, 0) if k in ("kafka", "redis") else 0), 0) for k, v in loaded.items()}
rate = wrk["per_sec"]
# % of a core / answers per second = µs of CPU per answer (1 % of a core = 10,000 µs/s).
us = {k: v * 10000.0 / rate for k, v in share.items()} if rate > 0 else {}
us["box"] = sum(us.values())
# Redis' commands per answer over the same window (others' commands on the
# shared Redis included: small beside the load's), the script calls apart.
def commands(file):
    return {name: int(calls) for name, calls in (l.split() for l in open(f"{work}/{file}"))}
c0, c1 = commands("cmd-before.txt"), commands("cmd-after.txt")
answers = rate * (t1 - t0)
per_answer = {k: round((v - c0.get(k, 0)) / answers, 2) for k, v in c1.items() if v > c0.get(k, 0)} if answers > 0 else {}
print(json.dumps({"kind": kind, "variant": variant, "round": int(rnd), "per_sec": rate, "non_2xx": wrk["non_2xx"],
                  "p50_ms": wrk["p50_ms"], "p99_ms": wrk["p99_ms"], "ingest_cpu_us": wrk["cpu_us_per_request"],
                  "cpu_percent_of_a_core": {k: round(v, 1) for k, v in share.items()},
                  "background_percent_of_a_core": {k: round(v, 1) for k, v in background.items()},
                  "cpu_us_per_answer": {k: round(v, 1) for k, v in us.items()},
                  "redis_commands_per_answer": per_answer}))
EOF
  tail -1 "$WORK/runs.jsonl"
}

# The mean time of each step of the accept run (firstcome_ingest_stage_seconds:
# the admit call, the produce to the broker's ack, the accept mark), from
# ingest's own histogram: what a setting such as linger.ms adds to an entry.
stages() { # variant round
  curl -fsS http://127.0.0.1:9480/metrics 2>/dev/null | python3 -c '
import json, re, sys
sums, counts = {}, {}
for line in sys.stdin:
    m = re.match(r"firstcome_ingest_stage_seconds_(sum|count)\{stage=\"(\w+)\"\} ([\d.e+-]+)", line)
    if m:
        (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
means = {k: round(sums[k] * 1000 / counts[k], 2) for k in sums if counts.get(k)}
print(json.dumps({"variant": sys.argv[1], "round": int(sys.argv[2]), "stage_mean_ms": means}))
' "$1" "$2" >>"$WORK/stages.jsonl" || true
  tail -1 "$WORK/stages.jsonl" 2>/dev/null || true
}

start_ingest() { # variant
  local -a vars=()
  [ -n "${VENV[$1]}" ] && read -r -a vars <<<"${VENV[$1]}"
  env ${vars[@]+"${vars[@]}"} FIRSTCOME_HTTP__PORT=8480 FIRSTCOME_OPS__PORT=9480 "${BIN[$1]}" >"$WORK/ingest-$1-$round.log" 2>&1 &
  INGEST_PID=$!
  wait_http http://127.0.0.1:9480/healthz || { echo "ingest ($1) did not start: $WORK/ingest-$1-$round.log" >&2; exit 1; }
}

run=0
for round in $(seq 1 "$ROUNDS"); do
  order=(base head); (( round % 2 == 0 )) && order=(head base)
  $BARE && { (( round % 2 == 1 )) && order=(bare "${order[@]}") || order=("${order[@]}" bare); }
  for variant in "${order[@]}"; do
    if [ "$variant" = bare ]; then
      # The bare handler keeps nothing: any members will do.
      sed -n "1,${PER_RUN}p" "$WORK/tokens.txt" >"$WORK/tokens-run.txt"
      "$WORK/bare_ingest" --port 8481 >"$WORK/bare-$round.log" 2>&1 &
      BARE_PID=$!
      for _ in $(seq 1 60); do curl -s -o /dev/null http://127.0.0.1:8481/ 2>/dev/null && break; sleep 0.25; done
      measure "bare-$round" 8481 "$EVENT" "$SECS" "$BARE_PID" bare bare "$round"
      kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true; BARE_PID=
      continue
    fi
    sed -n "$(( run * PER_RUN + 1 )),$(( (run + 1) * PER_RUN ))p" "$WORK/tokens.txt" >"$WORK/tokens-run.txt"
    run=$(( run + 1 ))
    start_ingest "$variant"
    measure "$variant-$round" 8480 "$EVENT" "$SECS" "$INGEST_PID" accept "$variant" "$round"
    stages "$variant" "$round"
    if [ "$SOLD_OUT_SECS" -gt 2 ]; then
      measure "sold-out-$variant-$round" 8480 "$SOLD_OUT_EVENT" "$SOLD_OUT_SECS" "$INGEST_PID" sold_out "$variant" "$round"
    fi
    kill "$INGEST_PID"; wait "$INGEST_PID" 2>/dev/null || true; INGEST_PID=
  done
done

if $PROFILE; then
  for variant in base head; do
    [ -f "$WORK/perf-$variant.data" ] || continue
    perf script -i "$WORK/perf-$variant.data" 2>/dev/null | python3 scripts/drill/profile_by_area.py \
      >"$WORK/profile-$variant-areas.txt" || true
    rm -f "$WORK/perf-$variant.data"
    echo "profile of the $variant's ingest by area ($WORK/profile-$variant-areas.txt):"; cat "$WORK/profile-$variant-areas.txt"
  done
fi
HEAD_NAME="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +)"
[ -n "$HEAD_BIN" ] && HEAD_NAME="bin:$(basename "$HEAD_BIN")"
summarise "$WORK/runs.jsonl" "$BASE_SHA" "$HEAD_NAME" "$AB/report.json" "${BASE_ENV[*]:-}" "${HEAD_ENV[*]:-}"
step "done: $AB/report.json (runs and logs in $WORK)"
