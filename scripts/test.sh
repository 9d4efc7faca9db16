#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts the real stack,
# checks the stack scripts, builds the workspace and runs every test (unit,
# integration and end-to-end) against the real services.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_build_deps
ensure_browser
stack_up

# The OTLP receiver of the tracing test (Jaeger, built once from its Go module: minutes on a
# fresh machine), built in the background while the stack checks and the workspace build run.
jaeger_log="$(mktemp)"
stack/otel/jaeger.sh install >"$jaeger_log" 2>&1 &
jaeger_install=$!

step "stack script checks (up twice is a no-op; down/up keeps data)"
bash stack/tests/stack_test.sh

step "member database (primary + streaming standbys) and Redis with a replica and three Sentinels"
# The default set runs member-primary and member-standby; the failover and standby-outage
# tests use the Sentinel-managed Redis and the second standby, started here.
stack/bin/stack up redis-sentinel member-standby2
bash stack/tests/member_db_test.sh
bash stack/tests/redis_sentinel_test.sh

step "building the workspace"
# A one-off build: incremental caches would only take disk (1.7 GB for this workspace).
export CARGO_INCREMENTAL=0
cargo build --workspace --all-targets --locked

step "format (rustfmt.toml; cargo fmt --all fixes it)"
cargo fmt --all -- --check

step "clippy (every crate and target, warnings are errors)"
# Its own pass over the dependencies (check metadata, not the build's): a few
# minutes cold, seconds when only our crates changed.
cargo clippy --workspace --all-targets --locked -- -D warnings

step "advisories and licences of Cargo.lock (cargo-deny, offline RustSec snapshot)"
bash scripts/deny.sh

bootstrap_pipeline target/debug/firstcome

step "three-broker mode checks (RF 3, min.insync 2, a SIGKILLed broker leaves and rejoins the ISR)"
bash stack/tests/kafka3_test.sh

step "removing what earlier test runs left (t_* databases, t-* topics and subjects)"
target/debug/firstcome-lab cleanup-tests

step "OTLP receiver for the tracing test (Jaeger)"
# A failed build fails the tracing test alone (it names the script), not the whole run.
if wait "$jaeger_install" && stack/otel/jaeger.sh up; then
  stack/otel/jaeger.sh status
else
  cat "$jaeger_log" >&2
  echo "jaeger: not available; the tracing test will fail" >&2
fi

step "the Java partner (Kafka's Java client + the registry's Avro serde, built with Maven)"
# Started by the partners test (tests/tests/partners/java_partner.rs); a no-op once built. A
# failed build fails that test alone (it runs the build again and shows the log).
bash tests/java/partner/build.sh || echo "java partner: not built; the partner test will fail" >&2

step "running the tests"
# Two test threads per binary: the machine has two cores and the services
# under test share them with Kafka, the registry and PostgreSQL.
log="$(mktemp)"
status=0
cargo test --workspace --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$log" || status=$?

# A failed test's output again at the end: a CI page that shows only the
# log's tail still says why (cargo prints it with its test binary, mid-run).
if [ "$status" -ne 0 ]; then
  awk '/^failures:$/ { p = 1; if (!shown++) print "\n---- again, the failures ----" } p { print } /^test result: FAILED/ { p = 0 }' "$log" |
    tail -n 400
fi
# One closing line for the whole run: cargo prints one result per test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
