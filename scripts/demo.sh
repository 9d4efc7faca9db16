#!/usr/bin/env bash
# The main job: an opening rush on the local stack. Installs and starts the
# real services, builds release binaries, then `firstcome-lab demo` seeds members,
# creates an event, starts every service, fires the burst, waits for the
# pipeline to drain and prints the outcome with each invariant checked.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_build_deps
stack_up

step "building release binaries"
cargo build --release --locked --bins

bootstrap_pipeline target/release/firstcome

step "running the demo"
target/release/firstcome-lab demo "$@"
