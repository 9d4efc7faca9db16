#!/usr/bin/env bash
# What one client with forged credentials or made-up event ids costs ingest
# and Redis, with the refusal guards as shipped ("guarded") and with the
# per-address refusal budget widened out of reach ("widened"), side by side
# in one run, in interleaved rounds; medians and ratios reported.
#
#   bash scripts/bench/refusal-cost.sh [--no-build] [--rounds N] [--secs S] [--connections C]
#
# Three loads, each from one address (127.0.0.1), each wrk run S seconds:
#   forged     POST /api/events/<id>/entries, `Authorization: Bearer <a new forged token>`
#              of an ordinary size (a signature that does not verify): 401, or 429 once
#              the address is over its refusal budget (limits.address_refusals_per_sec,
#              limits.address_refusal_burst);
#   oversized  the same with an 8 KiB Authorization header: refused before any HMAC
#              (ingest::auth::MAX_AUTHORIZATION_BYTES, a constant: not widened);
#   random-id  GET /api/events/<a new random id>: 404 after a Redis lookup, or 429.
# Per run: answers/s, the answers by status, ingest CPU per request (utime + stime
# of the ingest process, /proc/<pid>/stat) and Redis calls per request (the sum of
# `INFO commandstats` calls before and after, less the calls Redis served over an
# idle window of the same length just before: the Redis is the stack's, shared).
#
# "widened" is the same binary with FIRSTCOME_LIMITS__ADDRESS_REFUSALS_PER_SEC and
# _BURST at 1,000,000: what the guard saves. It targets 127.0.0.1 only, stops by
# itself (wrk -d) and removes its topics; output: a table on stdout and
# .stack/refusal-cost/<stamp>/report.json. The machine is shared: medians, not means.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/lib.sh

BUILD=true
ROUNDS=3
SECS=8
CONNECTIONS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=false; shift ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --secs) SECS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
ensure_build_deps
stack_up
eval "$(stack/bin/stack env)"

TARGET=${CARGO_TARGET_DIR:-target}
if $BUILD; then
  step "building ingest and firstcome (release) into $TARGET"
  cargo build --release --locked -p ingest -p firstcome-cli
fi
STAMP=$(date -u +%Y%m%d%H%M%S)
WORK=.stack/refusal-cost/$STAMP
mkdir -p "$WORK"
# A copy: another build into the same target folder must not change it under the runs.
cp "$TARGET/release/ingest" "$WORK/ingest"

export FIRSTCOME_KAFKA__TOPIC_PREFIX="rc-$STAMP."
export FIRSTCOME_TELEMETRY__LOG_FILTER="${FIRSTCOME_TELEMETRY__LOG_FILTER:-warn}"
bootstrap_pipeline "$TARGET/release/firstcome"
REDIS_ADMIN=(redis-cli -h 127.0.0.1 --user admin --pass firstcome_admin --no-auth-warning)
PORT=8482
OPS_PORT=9482
INGEST_PID=
cleanup() {
  if [ -n "$INGEST_PID" ]; then kill "$INGEST_PID" 2>/dev/null || true; wait "$INGEST_PID" 2>/dev/null || true; fi
  stack/bin/stack topics --delete --topic "rc-$STAMP.*" >/dev/null 2>&1 || true
  rm -f "$WORK/ingest"
}
trap cleanup EXIT

# The wrk script: one request shape per load, a new token or id per request,
# the answers counted by status across wrk's threads.
cat >"$WORK/refusals.lua" <<'EOF'
local load = os.getenv("LOAD")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  counts = {}
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
end
local function hex(n)
  local t = {}
  for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(t)
end
local padding = string.rep("A", 8192)
function request()
  if load == "random-id" then
    return wrk.format("GET", "/api/events/rc-" .. hex(16))
  end
  -- A well-formed HS256 token whose signature does not verify.
  local token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyYy0" .. hex(24) .. "In0." .. hex(43)
  if load == "oversized" then token = token .. padding end
  local headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
  return wrk.format("POST", "/api/events/rc-event/entries", headers, '{"answers":[]}')
end
function response(status) counts[status] = (counts[status] or 0) + 1 end
function done(summary)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do total[status] = (total[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(total) do table.insert(parts, string.format('"%d": %d', status, n)) end
  io.write(string.format('STATUS {%s} REQUESTS %d\n', table.concat(parts, ", "), summary.requests))
end
EOF

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
redis_calls() { "${REDIS_ADMIN[@]}" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s += $1} END {print s + 0}'; }
wait_http() { for _ in $(seq 1 120); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.5; done; return 1; }

start_ingest() { # variant round
  local -a vars=()
  [ "$1" = widened ] && vars=(FIRSTCOME_LIMITS__ADDRESS_REFUSALS_PER_SEC=1000000 FIRSTCOME_LIMITS__ADDRESS_REFUSAL_BURST=1000000)
  env ${vars[@]+"${vars[@]}"} FIRSTCOME_HTTP__HOST=127.0.0.1 FIRSTCOME_HTTP__PORT=$PORT \
    FIRSTCOME_OPS__HOST=127.0.0.1 FIRSTCOME_OPS__PORT=$OPS_PORT "$WORK/ingest" >"$WORK/ingest-$1-$2.log" 2>&1 &
  INGEST_PID=$!
  wait_http "http://127.0.0.1:$OPS_PORT/healthz" || { echo "ingest ($1) did not start: $WORK/ingest-$1-$2.log" >&2; exit 1; }
}

measure() { # variant load round
  local variant="$1" load="$2" round="$3" idle0 idle1 calls0 calls1 cpu0 cpu1 t0 t1
  # Redis' own rate of calls without this load (other tests share it), over as long a window.
  idle0=$(redis_calls); sleep "$SECS"; idle1=$(redis_calls)
  cpu0=$(ticks "$INGEST_PID"); calls0=$(redis_calls); t0=$(date +%s.%N)
  LOAD="$load" wrk -t2 -c"$CONNECTIONS" -d"${SECS}s" -s "$WORK/refusals.lua" "http://127.0.0.1:$PORT" \
    >"$WORK/wrk-$variant-$load-$round.txt" 2>&1
  t1=$(date +%s.%N); calls1=$(redis_calls); cpu1=$(ticks "$INGEST_PID")
  python3 - "$WORK/wrk-$variant-$load-$round.txt" "$variant" "$load" "$round" \
    "$(( cpu1 - cpu0 ))" "$(( calls1 - calls0 ))" "$(( idle1 - idle0 ))" "$t0" "$t1" "$(getconf CLK_TCK)" \
    >>"$WORK/runs.jsonl" <<'EOF'
import json, re, sys
path, variant, load, rnd = sys.argv[1:5]
ticks, calls, idle = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
t0, t1, hz = float(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])
text = open(path).read()
m = re.search(r"STATUS (\{.*\}) REQUESTS (\d+)", text)
if not m:
    sys.exit(f"no summary in {path}:\n{text}")
statuses, requests = json.loads(m.group(1)), int(m.group(2))
secs = t1 - t0
# The idle window is as long as the run (SECS): its calls are the others' share.
own_calls = max(calls - idle, 0)
print(json.dumps({"variant": variant, "load": load, "round": int(rnd), "requests": requests,
                  "per_sec": requests / secs, "statuses": statuses,
                  "ingest_cpu_us": ticks * 1e6 / hz / requests if requests else None,
                  "ingest_cpu_percent_of_a_core": ticks * 100.0 / hz / secs,
                  "redis_calls_per_request": own_calls / requests if requests else None,
                  "redis_calls_raw": calls, "redis_calls_idle_window": idle}))
EOF
  tail -1 "$WORK/runs.jsonl"
}

LOADS=(forged oversized random-id)
for round in $(seq 1 "$ROUNDS"); do
  order=(guarded widened); (( round % 2 == 0 )) && order=(widened guarded)
  for variant in "${order[@]}"; do
    start_ingest "$variant" "$round"
    for load in "${LOADS[@]}"; do
      measure "$variant" "$load" "$round"
    done
    kill "$INGEST_PID"; wait "$INGEST_PID" 2>/dev/null || true; INGEST_PID=
  done
done

python3 - "$WORK/runs.jsonl" "$WORK/report.json" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float("nan")
report = {}
for r in runs:
    report.setdefault(r["load"], {}).setdefault(r["variant"], []).append(r)
summary = {}
for load, variants in report.items():
    for variant, rs in variants.items():
        statuses = {}
        for r in rs:
            for s, n in r["statuses"].items():
                statuses[s] = statuses.get(s, 0) + n
        total = sum(statuses.values())
        summary.setdefault(load, {})[variant] = {
            "per_sec": med([r["per_sec"] for r in rs]),
            "ingest_cpu_us": med([r["ingest_cpu_us"] for r in rs]),
            "ingest_cpu_percent_of_a_core": med([r["ingest_cpu_percent_of_a_core"] for r in rs]),
            "redis_calls_per_request": med([r["redis_calls_per_request"] for r in rs]),
            "status_shares": {s: round(n / total, 4) for s, n in sorted(statuses.items())},
        }
json.dump({"runs": runs, "medians": summary}, open(sys.argv[2], "w"), indent=2)
print(f"\n| median of {max(r['round'] for r in runs)} rounds | guarded | widened | guarded / widened |")
print("| --- | --- | --- | --- |")
for load in ("forged", "oversized", "random-id"):
    g, w = summary.get(load, {}).get("guarded"), summary.get(load, {}).get("widened")
    if not g or not w:
        continue
    for key, label, fmt in (("per_sec", "answers/s", "{:,.0f}"), ("ingest_cpu_us", "ingest CPU µs per request", "{:.1f}"),
                            ("ingest_cpu_percent_of_a_core", "ingest CPU, % of a core", "{:.0f}"),
                            ("redis_calls_per_request", "Redis calls per request", "{:.3f}")):
        # Redis calls of a few stray INFO/monitoring commands are noise, not a ratio.
        ratio = f"{g[key] / w[key]:.2f}" if w[key] > 1e-3 else "–"
        print(f"| {load}: {label} | {fmt.format(g[key])} | {fmt.format(w[key])} | {ratio} |")
    shares = lambda v: ", ".join(f"{s}: {p:.1%}" for s, p in v["status_shares"].items())
    print(f"| {load}: answers by status | {shares(g)} | {shares(w)} | |")
EOF
step "done: $WORK/report.json"
