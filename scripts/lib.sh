# Shared by scripts/test.sh and scripts/demo.sh: bring a fresh machine to the
# point where the workspace builds and the local stack runs. Idempotent.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

step() { printf '\n==> %s\n' "$*" >&2; }

# Build dependencies of rdkafka (librdkafka is compiled from source).
ensure_build_deps() {
  local missing=()
  for pkg in build-essential pkg-config zlib1g-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    step "installing build dependencies: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    apt-get clean # the downloaded .debs: disk a CI machine needs for the build
  fi
  # promtool, which tests/tests/metrics.rs runs over every service's /metrics
  # (`promtool check metrics`); Debian ships it in the prometheus package. The
  # daemon is never started by the tests (and not by the install either in a
  # container, where policy-rc.d denies it).
  if ! command -v promtool >/dev/null; then
    step "installing promtool (Debian's prometheus package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    apt-get clean
  fi
  command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
  ensure_cargo_deny
}

# cargo-deny, for the advisory and licence check of Cargo.lock (scripts/deny.sh,
# deny.toml). Built from crates.io once per machine, pinned (a newer release may
# read deny.toml or the advisory database differently): about 4 minutes of CPU
# on this 2-core machine, then a no-op. Built from its source on crates.io
# rather than a binary a third party repackaged elsewhere: the checker of our
# supply chain should not be the weakest link of it.
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
  if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    step "installing cargo-deny $CARGO_DENY_VERSION (cargo install, once per machine)"
    CARGO_INCREMENTAL=0 cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION"
  fi
}

# The browser tests (tests/tests/browser.rs): Debian's Chromium and its
# chromedriver (run headless, without the sandbox, as CI runs as root), and a
# Korean font for the survey page's Korean text.
ensure_browser() {
  local missing=()
  for pkg in chromium chromium-driver fonts-nanum; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    step "installing the browser for the browser tests: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    apt-get clean
  fi
}

# The real services: PostgreSQL, Redis, Kafka, the schema registry.
stack_up() {
  step "starting the local stack (stack/bin/stack up)"
  stack/bin/stack up
  eval "$(stack/bin/stack env)"
}

# Schema, topics and registry subjects of the default (unprefixed) deployment.
bootstrap_pipeline() {
  local firstcome="$1"
  step "migrating the database, creating topics, registering schemas"
  "$firstcome" db migrate
  "$firstcome" topics create
  "$firstcome" schemas register
  "$firstcome" schemas check
}

# The chaos suite's part of the stack and binaries (scripts/chaos.sh,
# scripts/chaos-sweep.sh): the three-broker Kafka, the Sentinel-managed Redis,
# the services built, the default deployment bootstrapped, and the environment
# that points `firstcome-lab chaos` at them.
chaos_setup() {
  ensure_build_deps
  stack_up
  step "three-broker Kafka and the Sentinel-managed Redis"
  stack/bin/stack up kafka3 redis-sentinel
  step "building the binaries"
  cargo build --locked --bins -p firstcome-cli -p firstcome-lab -p ingest -p stock-processor -p recorder -p sender -p provider-sim
  bootstrap_pipeline target/debug/firstcome
  eval "$(stack/bin/stack env kafka3 redis-sentinel)"
}
