#!/usr/bin/env bash
# Bounded fuzz run for CI: every target for SECONDS (default 30) on the stable
# toolchain, without a sanitizer. Fails if any target finds a crash; the
# crashing input is then in fuzz/artifacts/<target>/.
#
# Usage: fuzz/smoke.sh [SECONDS]     (from any directory)
set -euo pipefail

secs="${1:-30}"
case "$secs" in
    '' | *[!0-9]*) echo "smoke.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
    exit 2
fi

# Build all targets first, so a build error is reported as such.
cargo fuzz build --sanitizer none

failed=()
for target in $(cargo fuzz list); do
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
echo "smoke.sh: no crash in ${secs}s per target"
