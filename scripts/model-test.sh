#!/usr/bin/env bash
# The model test of the stock core (stock-processor/tests/model.rs) with many
# cases: the real decide, release and rebuild scripts on the real Redis, driven
# through random interleavings of two stock instances, releases, rebuilds,
# aborted transactions, lost writes and failovers. `scripts/test.sh` runs a few
# hundred; this runs as many as asked, optimised, and on a failure prints the
# seed (to replay it: the same seed) and the smallest failing sequence of steps.
#
#   bash scripts/model-test.sh                 # 100,000 cases per configuration
#   bash scripts/model-test.sh 5000            # fewer
#   bash scripts/model-test.sh 100000 1234     # replay a seed
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cases="${1:-100000}"
seed="${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"

ensure_build_deps
stack_up

step "model test of the stock core: $cases cases per configuration, seed $seed"
status=0
PROPTEST_CASES="$cases" PROPTEST_RNG_SEED="$seed" \
  cargo test --locked --release -p stock-processor --test model -- --test-threads=2 || status=$?
if ((status)); then
  echo "model test failed: seed $seed ($cases cases); replay with: bash scripts/model-test.sh $cases $seed" >&2
fi
exit "$status"
