#!/usr/bin/env bash
# Redis' own cost per admitted entry of the admit script, two versions side by
# side: the script at a git revision (the base) and the working tree's (the
# head), each behind the working tree's prelude, as platform::scripts sends it.
#
#   bash scripts/bench/admit-script-ab.sh [--base REV] [--rounds N] [--requests N] [--batches "1 8"]
#
# A throwaway redis-server (port 6393, AOF everysec as the stack's, no RDB)
# under .stack/bench/admit-script-ab/, so neither the shared Redis nor other
# tests' traffic is measured. Per run: redis-benchmark, 32 clients, each call
# admitting --batches requests (1: a request alone; 8: a grouped call as
# ingest sends under load), every request a new member of an open event whose
# stock never runs out. Measured from Redis itself: its CPU (INFO cpu, user +
# system) and its commands (INFO commandstats, a script's commands counted
# each) over the run, per admitted entry. Rounds alternate the order of the
# two versions; medians are printed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BASE=HEAD
ROUNDS=3
REQUESTS=40000
BATCHES="1 8"
while [ $# -gt 0 ]; do
  case "$1" in
    --base) BASE="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --requests) REQUESTS="$2"; shift 2 ;;
    --batches) BATCHES="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# Resolved once: others commit to the branch while the rounds run.
BASE_SHA=$(git rev-parse --short "$BASE")
PORT=6393
DIR="$PWD/.stack/bench/admit-script-ab"
rm -rf "$DIR"; mkdir -p "$DIR"
git show "$BASE_SHA:platform/lua/admit.lua" >"$DIR/admit-base.lua"
cp platform/lua/admit.lua "$DIR/admit-head.lua"
R=(redis-cli -p "$PORT")
cleanup() { "${R[@]}" shutdown nosave >/dev/null 2>&1 || true; }
trap cleanup EXIT
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --daemonize yes --appendonly yes \
  --appendfsync everysec --save "" --logfile "$DIR/redis.log" >/dev/null
until [ "$("${R[@]}" ping 2>/dev/null)" = PONG ]; do sleep 0.1; done

# redis-benchmark writes __rand_int__ as 12 digits: the members are m000000000000 …
MEMBERS=400000
setup() { # the event: open for an hour, stock that never runs out, MEMBERS eligible
  local now
  now=$(( $(date +%s) * 1000 ))
  "${R[@]}" flushall >/dev/null
  "${R[@]}" hset 'fc:{ab}:meta' event_id ab open_at_ms $(( now - 60000 )) close_at_ms $(( now + 3600000 )) \
    for_sale 1000000000 line_depth 0 status open >/dev/null
  "${R[@]}" pexpire 'fc:{ab}:meta' 86400000 >/dev/null
  "${R[@]}" eval "for i = 0, $MEMBERS - 1 do redis.call('SADD', KEYS[1], string.format('m%012d', i)) end return 1" 1 'fc:{ab}:eligible' >/dev/null
}
cpu() { "${R[@]}" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f", s }'; }
commands() { "${R[@]}" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p' | sort; }

RESULTS="$DIR/runs.txt"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  order=(base head); (( round % 2 == 0 )) && order=(head base)
  for batch in $BATCHES; do
    for variant in "${order[@]}"; do
      setup
      sha=$("${R[@]}" script load "$(cat platform/lua/prelude.lua "$DIR/admit-$variant.lua")")
      args=()
      for _ in $(seq 1 "$batch"); do args+=(m__rand_int__ e-__rand_int__ 1); done
      calls=$(( REQUESTS / batch ))
      commands >"$DIR/cmd-before.txt"; c0=$(cpu)
      # The script's contract: since the settle after a raise, a tenth key and a sixth
      # argument (the wait, here 250 ms as ingest sends it).
      contract=(9 'fc:{ab}:meta' 'fc:{ab}:eligible' 'fc:{ab}:entered' 'fc:{ab}:entries' 'fc:{ab}:ticket'
        'fc:{ab}:tickets' 'fc:{ab}:frontier' 'fc:{ab}:pending' 'fc:{ab}:holes' 5000 10000 fc:event-state ab 0)
      if grep -q settle_ms "$DIR/admit-$variant.lua"; then
        contract=(10 "${contract[@]:1:9}" 'fc:{ab}:settle' "${contract[@]:10}" 250)
      fi
      redis-benchmark -p "$PORT" -c 32 -n "$calls" -r "$MEMBERS" evalsha "$sha" "${contract[@]}" \
        "${args[@]}" >/dev/null 2>&1
      c1=$(cpu); commands >"$DIR/cmd-after.txt"
      # Admitted: the ticket counter (a member drawn twice is answered, not admitted).
      admitted=$("${R[@]}" get 'fc:{ab}:ticket')
      # Every command but the INFO of these measurements (join: name, before, after;
      # a command first seen in the run has no before).
      cmds=$(join -a 2 "$DIR/cmd-before.txt" "$DIR/cmd-after.txt" |
        awk '$1 != "info" { s += (NF == 3 ? $3 - $2 : $2) } END { print s }')
      us=$(awk -v a="$c0" -v b="$c1" -v n="$admitted" 'BEGIN { printf "%.2f", (b - a) * 1e6 / n }')
      per=$(awk -v c="$cmds" -v n="$admitted" 'BEGIN { printf "%.2f", c / n }')
      echo "$variant $batch $round $us $per $admitted" >>"$RESULTS"
      echo "round $round, $batch per call, $variant: $us µs of Redis CPU and $per commands per admitted entry ($admitted admitted)" >&2
    done
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "| requests per call | base $BASE_SHA: µs, commands per entry | head (working tree): µs, commands per entry | head / base (µs) |"
echo "| --- | --- | --- | --- |"
for batch in $BATCHES; do
  bu=$(awk -v b="$batch" '$1 == "base" && $2 == b { print $4 }' "$RESULTS" | median)
  hu=$(awk -v b="$batch" '$1 == "head" && $2 == b { print $4 }' "$RESULTS" | median)
  bc=$(awk -v b="$batch" '$1 == "base" && $2 == b { print $5 }' "$RESULTS" | median)
  hc=$(awk -v b="$batch" '$1 == "head" && $2 == b { print $5 }' "$RESULTS" | median)
  echo "| $batch | $bu, $bc | $hu, $hc | $(awk -v a="$bu" -v b="$hu" 'BEGIN { printf "%.2f", b / a }') |"
done
