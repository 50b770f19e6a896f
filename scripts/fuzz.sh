#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, starting from its checked-in seed corpus
# (fuzz/corpus/seed-TARGET) and growing a working corpus beside it (fuzz/corpus/TARGET, not
# checked in). Exits non-zero if any target finds a crash; the input is left in
# fuzz/artifacts/TARGET/ and the panic is in the log printed for that target.
#
#   scripts/fuzz.sh [SECONDS]
#   TARGETS="udp_decode http_request" scripts/fuzz.sh 30
#
# This machine has only the stable toolchain; cargo-fuzz needs nightly-only flags (sanitizers),
# which RUSTC_BOOTSTRAP=1 lets stable accept.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS]  (seconds per target, at least 1)" >&2
    exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets="${TARGETS:-$(cargo fuzz list)}"
echo "== building: ${targets//$'\n'/ }"
cargo fuzz build

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for target in $targets; do
    mkdir -p "fuzz/corpus/$target"
    log="$logs/$target.log"
    echo "== $target: ${seconds}s"
    # The working corpus comes first: libFuzzer writes new inputs only to the first directory,
    # so the seed corpus stays as checked in. -timeout and -rss_limit_mb bound one input.
    if cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/corpus/seed-$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed+=("$target")
        # The panic message and the input's location are near the end.
        grep -E "panicked at|ERROR: libFuzzer|Test unit written to|SUMMARY" "$log" | head -20 || true
        tail -n 40 "$log" >&2
    fi
    runs="$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)"
    # The final stats' average; a crashed run prints none, so its last status line's figure.
    rate="$(grep -oE '^stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)"
    [ -n "$rate" ] || rate="$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)"
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)"
    summary+=("$(printf '%-14s %-6s runs=%-10s exec/s=%-8s cov=%s' "$target" "$status" "${runs:-?}" "${rate:-?}" "${cov:-?}")")
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
