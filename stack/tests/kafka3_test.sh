#!/usr/bin/env bash
# The three-broker KRaft mode (for the failure tests): it starts, the pipeline's
# topics are created on it with replication factor 3 and min.insync.replicas 2,
# every partition has three in-sync replicas, a SIGKILLed broker drops out of
# the ISR and comes back after `up`, and `down kafka3` stops it again.
# Needs target/debug/firstcome (built by scripts/test.sh). Leaves kafka3 DOWN.
# Output: `ok - …` / `not ok - …`, then `N passed, M failed`; exit 1 on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK="$ROOT/stack/bin/stack"
FIRSTCOME="${FIRSTCOME_BIN:-$ROOT/target/debug/firstcome}"
PREFIX="t-kafka3-$$."
TOPIC="${PREFIX}survey-submitted"

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

describe() { "$STACK" topics --bootstrap-server 127.0.0.1:9192 --describe --topic "$TOPIC" 2>/dev/null; }
# Partitions whose ISR has exactly $1 brokers.

"$STACK" up kafka3 >/dev/null
check "kafka3: three brokers running" bash -c "[[ \$('$STACK' status kafka3 | grep -c running) == 3 ]]"

(
  eval "$("$STACK" env kafka3)"
  export FIRSTCOME_KAFKA__TOPIC_PREFIX="$PREFIX"
  "$FIRSTCOME" topics create --partitions 3 --replication 3 >/dev/null 2>&1
) && ok "kafka3: pipeline topics created with replication 3" || not_ok "kafka3: pipeline topics created with replication 3"

out="$(describe)"
check "kafka3: replication factor 3" grep -q "ReplicationFactor: 3" <<<"$out"
check "kafka3: min.insync.replicas 2" grep -q "min.insync.replicas=2" <<<"$out"
check "kafka3: all 3 partitions have 3 in-sync replicas" [ "$(grep -cE 'Isr: [0-9]+,[0-9]+,[0-9]+' <<<"$out")" = 3 ]

# ISR patterns: exactly two replicas in sync, and three.
ISR_OF_TWO='Isr: [0-9]+,[0-9]+\s*($|\s)'
ISR_OF_THREE='Isr: [0-9]+,[0-9]+,[0-9]+'
# isr_within SECONDS PATTERN: true once all 3 partitions match PATTERN.
isr_within() {
  local _
  for _ in $(seq 1 "$1"); do
    [ "$(describe | grep -cE "$2")" = 3 ] && return 0
    sleep 1
  done
  return 1
}

"$STACK" kill kafka3-3 >/dev/null 2>&1 || true
check "kafka3: a killed broker leaves the ISR (2 of 3 remain)" isr_within 30 "$ISR_OF_TWO"

"$STACK" up kafka3-3 >/dev/null
check "kafka3: the restarted broker rejoins the ISR" isr_within 60 "$ISR_OF_THREE"

"$STACK" down kafka3 >/dev/null
check "kafka3: stopped" bash -c "! '$STACK' status kafka3 | grep -q running"

finish
