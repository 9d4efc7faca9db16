#!/usr/bin/env bash
# The chaos suite over many seeds, one after another (each seed is its own run of
# `firstcome-lab chaos`, see scripts/chaos.sh), then one table: per seed, whether every
# invariant held, FCFS fidelity, phantom successes (members told "won" and never
# paid), entries admitted (distinct, with a ticket; a resumed entry answered 202 twice
# counts once) against the admission bound (for sale + the line), tickets
# given twice and the time from the last request to the last gift.
# Reports and logs stay in .stack/chaos/<seed>/.
#
#   bash scripts/chaos-sweep.sh            # seeds 1..20
#   bash scripts/chaos-sweep.sh 21 10      # seeds 21..30
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

first="${1:-1}"
count="${2:-20}"
shift 2 || true

chaos_setup

# The whole sweep runs the binaries built now, even if the workspace is built
# again meanwhile (a restarted service would otherwise run other code).
bin_dir=".stack/chaos/bin-sweep"
rm -rf "$bin_dir" && mkdir -p "$bin_dir"
cp target/debug/{firstcome-lab,ingest,stock-processor,recorder,sender,provider-sim} "$bin_dir"/
export FIRSTCOME_BIN_DIR="$PWD/$bin_dir"

failed=0
seeds=()
for ((seed = first; seed < first + count; seed++)); do
  step "chaos seed $seed ($((seed - first + 1)) of $count)"
  seeds+=("$seed")
  "$bin_dir/firstcome-lab" chaos --seed "$seed" "$@" || failed=$((failed + 1))
done

step "chaos sweep: seeds $first..$((first + count - 1))"
python3 - "${seeds[@]}" <<'PY'
import json, sys
print("| seed | invariants | FCFS fidelity | phantom successes | accepted / bound | tickets given twice | last request → last gift |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for seed in sys.argv[1:]:
    try:
        r = json.load(open(f".stack/chaos/{seed}/report.json"))
    except OSError:
        print(f"| {seed} | no report | | | | | |")
        continue
    checks = r.get("checks") or []
    held = bool(checks) and all(c.get("holds") for c in checks) and not r.get("error")
    inv = r.get("invariants") or {}
    tally = inv.get("tally") or {}
    phantoms = tally.get("phantom_successes", "?")
    bound = tally.get("admission_bound", "?")
    twice = tally.get("duplicate_tickets", "?")
    fid = r.get("fidelity") or {}
    share = f"{100 * fid['share']:.2f} %" if "share" in fid else "?"
    gift = r.get("last_request_to_last_gift_ms")
    gift = f"{gift / 1000:.1f} s" if gift is not None else "?"
    print(f"| {seed} | {'hold' if held else 'BROKEN'} | {share} | {phantoms} | {tally.get('ticketed_entries', '?')} / {bound} | {twice} | {gift} |")
PY
echo "seeds failed: $failed of $count"
exit $((failed > 0))
