#!/usr/bin/env bash
# Bounded fuzz run for CI: every target in turn, on the stable toolchain,
# without a sanitizer, SECONDS in all (default 60) shared evenly among the
# targets (at least 5 s each), so adding a target does not lengthen CI.
# Fails if any target finds a crash; the crashing input is then in
# fuzz/artifacts/<target>/.
#
# Usage: fuzz/smoke.sh [SECONDS]     (from any directory)
set -euo pipefail

total="${1:-60}"
case "$total" in
    '' | *[!0-9]*) echo "smoke.sh: SECONDS must be a whole number, got '$total'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
    exit 2
fi

# Build all targets first, so a build error is reported as such.
cargo fuzz build --sanitizer none

mapfile -t targets < <(cargo fuzz list)
secs=$((total / ${#targets[@]}))
((secs >= 5)) || secs=5

failed=()
for target in "${targets[@]}"; do
    echo "== fuzz target '$target' for ${secs}s"
    if ! cargo fuzz run "$target" --sanitizer none -- \
        -max_total_time="$secs" -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "smoke.sh: crash found in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "smoke.sh: no crash in ${#targets[@]} targets, ${secs}s each"
