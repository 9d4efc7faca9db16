#!/usr/bin/env bash
# The chaos suite alone: starts the real stack with the three-broker Kafka and the
# Sentinel-managed Redis, builds the binaries, then `firstcome-lab chaos --seed N` runs a
# rush while processes, brokers and stores fail at the seed's moments and checks every
# invariant after the drain. The report and the service logs stay in .stack/chaos/<seed>/.
#
#   bash scripts/chaos.sh            # seed 1
#   bash scripts/chaos.sh 42         # another seed (the same seed replays the same schedule)
#   bash scripts/chaos.sh 42 --entries 40000 --rush-secs 80   # longer (any `firstcome-lab chaos` option)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seed="${1:-1}"
shift || true

chaos_setup

step "chaos seed $seed"
target/debug/firstcome-lab chaos --seed "$seed" "$@"
