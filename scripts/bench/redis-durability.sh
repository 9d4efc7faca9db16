#!/usr/bin/env bash
# What `appendfsync always` costs next to `everysec`, on this machine, for the
# two Redis workloads of the pipeline (docs/defence-in-depth.md, "Durability"):
#
#   ingest   the accept path's two script calls per entry (the real
#            platform/lua/admit.lua behind its prelude, and mark_accepted.lua,
#            as platform::scripts sends them), 64 concurrent
#            clients, every request a different eligible member;
#   stock    the stock stage's one script call per batch, from ONE connection
#            (the stage decides batches one after another): a script of the
#            decide script's size (100 entries: 100 reads of the eligibility
#            set, 200 hash writes, one counter write).
#
# Two throwaway redis-server processes (ports 6391 everysec, 6392 always, AOF
# on, no RDB) under .stack/bench/; rounds interleave the two modes so both see
# the same machine; medians of the rounds are printed with the ratio.
# Usage: bash scripts/bench/redis-durability.sh [rounds=3] [requests=50000]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

rounds="${1:-3}"
requests="${2:-50000}"
dir="$PWD/.stack/bench/redis-durability"
rm -rf "$dir"; mkdir -p "$dir"

declare -A port=([everysec]=6391 [always]=6392)
cleanup() {
  for mode in everysec always; do
    redis-cli -p "${port[$mode]}" shutdown nosave >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

for mode in everysec always; do
  mkdir -p "$dir/$mode"
  redis-server --port "${port[$mode]}" --bind 127.0.0.1 --dir "$dir/$mode" --daemonize yes \
    --appendonly yes --appendfsync "$mode" --save "" --logfile "$dir/$mode/redis.log" >/dev/null
done
for mode in everysec always; do
  until redis-cli -p "${port[$mode]}" ping >/dev/null 2>&1; do sleep 0.1; done
done

admit_sha=""; mark_sha=""; batch_sha=""
batch_lua="$(cat <<'LUA'
-- A decide-sized batch: 100 entries, each read against the eligibility set and
-- written twice (decision, winner), then the counter.
for i = 1, 100 do
  local member = 'm' .. (ARGV[1] + i)
  redis.call('SISMEMBER', KEYS[1], member)
  redis.call('HSET', KEYS[2], ARGV[2] .. ':' .. i, 'WON|' .. i)
  redis.call('HSET', KEYS[3], member, i)
end
return redis.call('DECRBY', KEYS[4], 100)
LUA
)"

setup() {
  local p="$1" now open close
  now=$(( $(date +%s) * 1000 ))
  open=$(( now - 60000 )); close=$(( now + 3600000 ))
  redis-cli -p "$p" flushall >/dev/null
  redis-cli -p "$p" hset 'fc:{bench}:meta' event_id bench open_at_ms "$open" close_at_ms "$close" \
    for_sale 1000000000 questions '[]' status open >/dev/null
  redis-cli -p "$p" set 'fc:{bench}:stock' 1000000000 >/dev/null
  # 1,000,000 eligible members, spelled as redis-benchmark writes __rand_int__
  # (12 digits: m000000000000 … m000000999999); spelled m0 … m999999 they
  # matched no request, and the admit workload measured refusals.
  redis-cli -p "$p" eval "for i = 0, 999999 do redis.call('SADD', KEYS[1], string.format('m%012d', i)) end return 1" 1 'fc:{bench}:eligible' >/dev/null
  admit_sha=$(redis-cli -p "$p" script load "$(cat platform/lua/prelude.lua platform/lua/admit.lua)")
  mark_sha=$(redis-cli -p "$p" script load "$(cat platform/lua/mark_accepted.lua)")
  batch_sha=$(redis-cli -p "$p" script load "$batch_lua")
}

# One redis-benchmark run; prints "rps p50_ms p99_ms".
run() {
  local p="$1"; shift
  redis-benchmark -p "$p" --csv "$@" 2>/dev/null | awk -F'","' 'NR==2 { print $2, $5, $7 }'
}

declare -A results
for round in $(seq 1 "$rounds"); do
  for mode in everysec always; do
    p="${port[$mode]}"
    setup "$p"
    results[$mode,admit,$round]=$(run "$p" -c 64 -n "$requests" -r 1000000 \
      evalsha "$admit_sha" 9 'fc:{bench}:meta' 'fc:{bench}:eligible' 'fc:{bench}:entered' 'fc:{bench}:entries' \
      'fc:{bench}:ticket' 'fc:{bench}:tickets' 'fc:{bench}:frontier' 'fc:{bench}:pending' 'fc:{bench}:holes' \
      5000 10000 fc:event-state bench 0 m__rand_int__ e-__rand_int__ 1)
    results[$mode,mark,$round]=$(run "$p" -c 64 -n "$requests" -r 1000000 \
      evalsha "$mark_sha" 1 'fc:{bench}:entered' m__rand_int__ e-__rand_int__)
    results[$mode,batch,$round]=$(run "$p" -c 1 -n $(( requests / 50 )) -r 900000 \
      evalsha "$batch_sha" 4 'fc:{bench}:eligible' 'fc:{bench}:decisions' 'fc:{bench}:winners' 'fc:{bench}:stock' \
      __rand_int__ b__rand_int__)
    echo "round $round $mode: admit ${results[$mode,admit,$round]} | mark ${results[$mode,mark,$round]} | batch ${results[$mode,batch,$round]}" >&2
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { # mode workload column(1 rps, 2 p50, 3 p99)
  for round in $(seq 1 "$rounds"); do echo "${results[$1,$2,$round]}" | awk -v c="$3" '{ print $c }'; done | median
}

printf '\n%-34s %12s %12s %8s\n' "workload (median of $rounds rounds)" everysec always ratio
for workload in admit mark batch; do
  case $workload in
    admit) label="ingest admit script, 64 clients" ;;
    mark)  label="ingest mark script, 64 clients" ;;
    batch) label="stock batch script, 1 client" ;;
  esac
  for col in 1 2 3; do
    case $col in 1) unit="calls/s" ;; 2) unit="p50 ms" ;; 3) unit="p99 ms" ;; esac
    e=$(field everysec "$workload" "$col"); a=$(field always "$workload" "$col")
    printf '%-34s %12s %12s %8s\n' "$label, $unit" "$e" "$a" "$(awk -v a="$a" -v e="$e" 'BEGIN { printf "%.2f", (e > 0) ? a / e : 0 }')"
  done
done
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(redis-server --version | awk '{ print $3 }'), disk of $dir: $(df -h "$dir" | awk 'NR==2 { print $1 }')"
