# Shared by the stack's test scripts: TAP-like `ok - …` / `not ok - …` lines
# and the closing `N passed, M failed` line.

passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
# check "description" command...: ok when the command succeeds.
check() {
  local desc="$1"
  shift
  if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
# Prints the closing line; fails when any check failed.
finish() {
  echo "$passed passed, $failed failed"
  ((failed == 0))
}
