#!/usr/bin/env bash
# The property tests of what comes from outside (bearer/JWT, traceparent,
# correlation id, entry bodies, the dashboard's event stream, Avro records)
# with many more cases than the suite runs (300 per property there).
#
# Usage: bash scripts/fuzz.sh [cases]   (default 100000 per property)
#
# A failure prints the smallest failing input, and proptest saves its seed in
# <crate>/tests/fuzz.proptest-regressions (replayed first by every later run):
# turn it into a named test in the same fuzz.rs, fix, and commit both.
# The Avro properties need the registry: the local stack is started if needed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cases="${1:-100000}"
[[ "$cases" =~ ^[0-9]+$ ]] || { echo "usage: $0 [cases]" >&2; exit 2; }
export PROPTEST_CASES="$cases" CARGO_INCREMENTAL=0

stack_up
status=0
for crate in platform ingest schemas; do
  step "$crate: $cases cases per property"
  cargo test --locked -p "$crate" --test fuzz -- --test-threads=2 || status=$?
done
exit "$status"
