#!/usr/bin/env bash
# Compares this checkout's chat-server with the one of an earlier commit,
# driven by this checkout's chat-bench, in one run on one machine: each
# workload alternates old and new servers RUNS times (default 5), each a
# fresh process on loopback, and prints the medians side by side with their
# ratio. Usage, from the repository root:
#
#   bash chat-client/scripts/compare.sh REV [RUNS]
#
# REV is built in a git worktree under target/compare/ with its own target
# directory. Every run's JSON is kept in target/compare/json/. ONLY=REGEX
# runs only the workloads whose names match (e.g. ONLY='fanout').
set -euo pipefail
rev="${1:?usage: compare.sh REV [RUNS]}"
runs="${2:-5}"
case "$runs" in '' | *[!0-9]*) echo "compare.sh: RUNS must be a number" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/target/compare
sha=$(git rev-parse --short "$rev")
mkdir -p "$work"
if [ ! -d "$work/$sha" ]; then
    git worktree add -f --detach "$work/$sha" "$sha" >/dev/null
fi
echo "building $sha and this checkout (release)..." >&2
(cd "$work/$sha" && CARGO_TARGET_DIR="$work/target" cargo build --release -q -p chat-server --bin chat-server)
cargo build --release -q -p chat-server -p chat-client --bin chat-server --bin chat-bench
old=$work/target/release/chat-server
new=$root/target/release/chat-server
bench=$root/target/release/chat-bench
out=$work/json
mkdir -p "$out"
rm -f "$out"/*.json

. chat-client/scripts/server.sh

# workload NAME SERVER-PREFIX BENCH-PREFIX SERVER-FLAGS... -- BENCH-ARGS...
workload() {
    local name=$1 sprefix=$2 bprefix=$3; shift 3
    local sflags=()
    while [ "$1" != "--" ]; do sflags+=("$1"); shift; done
    shift
    [[ "$name" =~ ${ONLY:-.} ]] || return 0
    for i in $(seq 1 "$runs"); do
        for side in old new; do
            local binary=$old
            [ "$side" = new ] && binary=$new
            start "$sprefix" "$binary" "${sflags[@]}"
            echo "== $name $side, run $i/$runs" >&2
            $bprefix "$bench" --server "$addr" --server-pid "$server_pid" --json "$@" \
                >"$out/$name-$side-$i.json" || echo "compare.sh: $name $side run $i failed" >&2
            stop
        done
    done
}

workload fanout-t1 env env --threads 1 --rate 0 -- fanout
workload fanout-t2 env env --rate 0 -- fanout
workload paced-t1 env env --threads 1 --rate 0 -- fanout --rate 100 -m 500
workload paced-t2 env env --rate 0 -- fanout --rate 100 -m 500
workload idle env env --max-clients 20000 -- idle -k 5000
# Named rooms, as bench.sh runs them: one room of 50, 1,000 clients in 200
# rooms of 10 and in 20 rooms of 100 (each in 2), and the same 1,000 in one.
workload rooms-1x50 env env --threads 1 --rate 0 -- rooms -n 50 --room-size 50 -k 1 -m 2000
workload rooms-200x10 env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 10 -k 2 -m 544
workload rooms-20x100 env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 100 -k 2 -m 50
workload rooms-1x1000 env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 1000 -k 1 -m 5

python3 - "$out" "$runs" "$sha" <<'PY'
import json, os, statistics, sys
out, runs, sha = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name, side):
    found = []
    for i in range(1, runs + 1):
        try:
            found.append(json.load(open(os.path.join(out, f"{name}-{side}-{i}.json"))))
        except (OSError, ValueError):
            pass
    return found
def med(rs, f):
    xs = [f(r) for r in rs]
    return statistics.median(xs) if xs else float("nan")
print(f"medians of {runs} runs, old = {sha}, new = this checkout; ratio = new / old")
rows = [
    ("deliveries/s", lambda r: r["rate"], "{:.0f}"),
    ("server cpu us/delivery", lambda r: r["server"]["cpu_us_per_unit"], "{:.4f}"),
    ("p50 latency us", lambda r: r["latency_us"]["p50"], "{:.0f}"),
    ("p99 latency us", lambda r: r["latency_us"]["p99"], "{:.0f}"),
]
for name in ["fanout-t1", "fanout-t2", "paced-t1", "paced-t2", "rooms-1x50", "rooms-200x10", "rooms-20x100", "rooms-1x1000"]:
    o, n = load(name, "old"), load(name, "new")
    if not o or not n:
        continue
    for label, f, fmt in rows:
        a, b = med(o, f), med(n, f)
        print(f"{name:<12} {label:<24} {fmt.format(a):>12} {fmt.format(b):>12} {b / a if a else float('nan'):>7.3f}")
o, n = load("idle", "old"), load("idle", "new")
if o and n:
    a, b = med(o, lambda r: r["rss_per_connection"]), med(n, lambda r: r["rss_per_connection"])
    print(f"{'idle':<12} {'RSS bytes/connection':<24} {a:>12.0f} {b:>12.0f} {b / a:>7.3f}")
PY
