#!/usr/bin/env bash
# ingest's accept path, before and after: two builds of ingest measured side
# by side in one run, in interleaved rounds, medians and ratios reported
# (a before/after throughput of the hot-path changes).
#
#   bash scripts/bench/accept-ab.sh [--base REV] [--rounds N] [--secs S] [--connections C]
#
# --base (default 09a3423: the last commit before the second round of
# hot-path changes) is built in a git worktree under .stack/ab/
# with its own target folder (a release build of
# ingest: several minutes on two cores the first time, cached after). The
# working tree's ingest is the "head". Each round starts each ingest afresh
# on the same port, under a topic prefix no consumer reads, and runs wrk
# against an event whose stock never runs out, every request a new eligible
# member; the order of the two alternates between rounds. Per run: accepted
# entries/s, wrk's p50/p99, ingest's CPU per accepted entry and every
# process' CPU share. Output: a table on stdout and .stack/ab/report.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/lib.sh

BASE=09a3423
ROUNDS=5
SECS=15
CONNECTIONS=256
while [ $# -gt 0 ]; do
  case "$1" in
    --base) BASE="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
ensure_build_deps
stack_up

BASE_SHA=$(git rev-parse --short "$BASE")
AB=.stack/ab
mkdir -p "$AB"
step "building the head's ingest (the working tree) and the base's ($BASE_SHA)"
cargo build --release --locked -p ingest -p firstcome-cli -p bench
if [ ! -d "$AB/src-$BASE_SHA" ]; then
  git worktree prune  # a worktree whose folder went with a stack reset
  git worktree add --detach "$AB/src-$BASE_SHA" "$BASE_SHA" >/dev/null
fi
(cd "$AB/src-$BASE_SHA" && CARGO_TARGET_DIR="$REPO/$AB/target-$BASE_SHA" cargo build --release --locked -p ingest)
declare -A BIN=([head]=target/release/ingest [base]="$AB/target-$BASE_SHA/release/ingest")

STAMP=$(date -u +%Y%m%d%H%M%S)
WORK=$AB/$STAMP
mkdir -p "$WORK"
export FIRSTCOME_KAFKA__TOPIC_PREFIX="ab-$STAMP."
export FIRSTCOME_TELEMETRY__LOG_FILTER="${FIRSTCOME_TELEMETRY__LOG_FILTER:-info,rdkafka=warn}"
bootstrap_pipeline target/release/firstcome
REDIS_ADMIN=(redis-cli --user admin --pass firstcome_admin --no-auth-warning)
EVENT="ab-accept-$STAMP"
INGEST_PID=
cleanup() {
  [ -n "$INGEST_PID" ] && kill "$INGEST_PID" 2>/dev/null && wait "$INGEST_PID" 2>/dev/null
  "${REDIS_ADMIN[@]}" --scan --pattern "fc:{$EVENT}:*" | xargs -r "${REDIS_ADMIN[@]}" DEL >/dev/null
  stack/bin/stack topics --delete --topic "ab-$STAMP.*" >/dev/null 2>&1 || true
  rm -f "$WORK"/tokens*.txt
}
trap cleanup EXIT

# A new member per request: enough for every run at 15,000/s.
PER_RUN=$(( SECS * 15000 ))
MEMBERS=$(( PER_RUN * ROUNDS * 2 ))
step "seeding $MEMBERS members (product ab-beans) and their tokens"
target/release/firstcome members seed "$MEMBERS" --prefix ab --eligible-ratio 1.0 --product ab-beans
target/release/mint_tokens --prefix ab --count "$MEMBERS" >"$WORK/tokens.txt"
target/release/firstcome event create --id "$EVENT" --product ab-beans --total 1000000000 --close-at +6h

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of every process of the stack and the load, by name.
snapshot() {
  for pid in $(pgrep -f 'release/ingest|redis-server|kafka.Kafka|^wrk'); do
    [ -r "/proc/$pid/stat" ] && printf '%s %s %s\n' "$pid" "$(ticks "$pid")" "$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-200)"
  done
}

run=0
for round in $(seq 1 "$ROUNDS"); do
  order=(base head); (( round % 2 == 0 )) && order=(head base)
  for variant in "${order[@]}"; do
    sed -n "$(( run * PER_RUN + 1 )),$(( (run + 1) * PER_RUN ))p" "$WORK/tokens.txt" >"$WORK/tokens-run.txt"
    run=$(( run + 1 ))
    FIRSTCOME_HTTP__PORT=8480 FIRSTCOME_OPS__PORT=9480 "${BIN[$variant]}" >"$WORK/ingest-$variant-$round.log" 2>&1 &
    INGEST_PID=$!
    for _ in $(seq 1 120); do curl -fsS -o /dev/null http://127.0.0.1:9480/healthz 2>/dev/null && break; sleep 0.5; done
    before=$(ticks "$INGEST_PID")
    TOKENS="$WORK/tokens-run.txt" EVENT="$EVENT" THREADS=2 wrk -t2 -c"$CONNECTIONS" -d"${SECS}s" --latency \
      -s scripts/drill/entries.lua http://127.0.0.1:8480 >"$WORK/wrk-$variant-$round.txt" 2>&1 &
    WRK_PID=$!
    # Every process' share over the middle of the run (wrk included).
    sleep 1; snapshot >"$WORK/cpu-before.txt"; t0=$(date +%s.%N)
    sleep $(( SECS - 2 )); snapshot >"$WORK/cpu-after.txt"; t1=$(date +%s.%N)
    wait "$WRK_PID"
    after=$(ticks "$INGEST_PID")
    kill "$INGEST_PID"; wait "$INGEST_PID" 2>/dev/null || true; INGEST_PID=
    python3 - "$WORK" "$variant" "$round" "$(( after - before ))" "$t0" "$t1" >>"$WORK/runs.jsonl" <<'EOF'
import json, sys
sys.path.insert(0, "scripts/drill")
from wrk_summary import summary
work, variant, rnd, ticks, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
wrk = summary(open(f"{work}/wrk-{variant}-{rnd}.txt").read(), only_2xx=True, cpu_ticks=ticks)
def load(name):
    out = {}
    for line in open(f"{work}/{name}"):
        pid, t, cmd = line.split(" ", 2)
        out[pid] = (int(t), cmd)
    return out
a, b = load("cpu-before.txt"), load("cpu-after.txt")
share = {}
for pid, (t, cmd) in b.items():
    if pid not in a: continue
    name = next((n for k, n in [("release/ingest", "ingest"), ("redis-server", "redis"), ("java", "kafka"), ("wrk", "wrk")] if k in cmd), "other")
    share[name] = share.get(name, 0) + (t - a[pid][0]) / (t1 - t0)  # ticks/s = % of a core
print(json.dumps({"variant": variant, "round": rnd, "accepted_per_sec": wrk["per_sec"], "non_2xx": wrk["non_2xx"],
                  "p50_ms": wrk["p50_ms"], "p99_ms": wrk["p99_ms"], "ingest_cpu_us_per_entry": wrk["cpu_us_per_request"],
                  "cpu_percent_of_a_core": {k: round(v, 1) for k, v in share.items()}}))
EOF
    tail -1 "$WORK/runs.jsonl"
  done
done

python3 - "$WORK/runs.jsonl" "$BASE_SHA" "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +)" \
  "$AB/report.json" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
report = {"base": sys.argv[2], "head": sys.argv[3], "runs": runs, "median": {}}
for v in ("base", "head"):
    rs = [r for r in runs if r["variant"] == v]
    report["median"][v] = {k: statistics.median(r[k] for r in rs)
                           for k in ("accepted_per_sec", "p50_ms", "p99_ms", "ingest_cpu_us_per_entry")}
b, h = report["median"]["base"], report["median"]["head"]
report["ratio_head_to_base"] = {k: h[k] / b[k] for k in b}
json.dump(report, open(sys.argv[4], "w"), indent=2)
print(f"\n| median of {len(runs)//2} rounds | base {sys.argv[2]} | head {sys.argv[3]} | head / base |")
print("| --- | --- | --- | --- |")
for k, label in [("accepted_per_sec", "accepted entries/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                 ("ingest_cpu_us_per_entry", "ingest CPU µs per accepted entry")]:
    print(f"| {label} | {b[k]:,.1f} | {h[k]:,.1f} | {h[k]/b[k]:.2f} |")
EOF
step "done: $AB/report.json (runs and logs in $WORK)"
