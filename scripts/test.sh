#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts the real stack,
# checks the stack scripts, builds the workspace and runs every test (unit,
# integration and end-to-end) against the real services.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_build_deps
stack_up

step "stack script checks (up twice is a no-op; down/up keeps data)"
bash stack/tests/stack_test.sh

step "building the workspace"
cargo build --workspace --all-targets --locked

bootstrap_pipeline target/debug/firstcome

step "running the tests"
# Two test threads per binary: the machine has two cores and the services
# under test share them with Kafka, the registry and PostgreSQL.
cargo test --workspace --locked --no-fail-fast -- --test-threads=2
