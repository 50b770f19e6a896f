#!/usr/bin/env bash
# Runs every test pricebeast has, on a fresh machine or a warm one: installs what is missing,
# then checks formatting and lints, then runs the unit, property and integration tests
# (the integration tests start the real binary on loopback ports).
#
#   scripts/test.sh            # everything
#   FUZZ_SECONDS=30 scripts/test.sh   # also run each fuzz target for 30 s (needs a few minutes to build)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  say "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

say "format"
cargo fmt --all -- --check

say "lints"
cargo clippy --all-targets --locked -- -D warnings

say "unit, property and integration tests"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --all-targets --locked 2>&1 | tee "$results"

if [ "${FUZZ_SECONDS:-0}" -gt 0 ]; then
  say "fuzzing each target for ${FUZZ_SECONDS}s"
  scripts/fuzz.sh "$FUZZ_SECONDS"
fi

# One closing line for every test binary together (pipefail above already failed the run if any
# binary failed).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$results"
