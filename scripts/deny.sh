#!/usr/bin/env bash
# Advisories and licences of Cargo.lock (cargo-deny, config in deny.toml),
# offline: against the RustSec advisory database snapshot in
# ../shared/advisory-db, never fetched. Exit status non-zero on a finding.
#
# Usage: bash scripts/deny.sh [advisories|licenses|…]   (default: both)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

snapshot="${FIRSTCOME_ADVISORY_DB:-$REPO/../shared/advisory-db}"
[[ -d "$snapshot/crates" ]] || { echo "deny: no advisory database snapshot at $snapshot" >&2; exit 2; }

# cargo-deny reads a fetched copy of each db-urls entry from db-path, in a
# directory named after the URL's hash, as a git checkout (it reads the
# commit's date). The snapshot is read-only and not a repository: lay a copy
# out that way, once per snapshot (its SNAPSHOT.md names the commit).
db="target/advisory-db/advisory-db-3157b0e258782691"
stamp="$db/.snapshot"
if ! cmp -s "$snapshot/SNAPSHOT.md" "$stamp" 2>/dev/null; then
  rm -rf "$db"
  mkdir -p "$(dirname "$db")"
  cp -r "$snapshot" "$db"
  chmod -R u+w "$db"
  git -C "$db" init -q
  git -C "$db" add -A
  git -C "$db" -c user.name=firstcome -c user.email=firstcome@localhost -c commit.gpgsign=false \
    commit -qm "RustSec advisory database snapshot"
  cp "$snapshot/SNAPSHOT.md" "$stamp"
fi

# `cargo metadata` (which cargo-deny runs) must not reach the network either
# under --offline: the crates of every target in Cargo.lock must be in cargo's
# cache (a no-op once fetched).
cargo fetch --locked --quiet

checks=("$@")
((${#checks[@]})) || checks=(advisories licenses)
cargo deny --offline --locked check "${checks[@]}"
