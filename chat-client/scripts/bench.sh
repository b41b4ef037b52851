#!/usr/bin/env bash
# Runs every chat-bench workload RUNS times (default 3), each against a fresh
# release chat-server in its own process on loopback, and prints the median
# of each figure. Usage, from the repository root:
#
#   bash chat-client/scripts/bench.sh [RUNS]
#
# Figures go to stdout as a table; every run's JSON is kept in target/bench/.
set -euo pipefail
runs="${1:-3}"
case "$runs" in '' | *[!0-9]*) echo "bench.sh: RUNS must be a number" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
cargo build --release -q -p chat-server -p chat-client --bin chat-server --bin chat-bench
bin=target/release
out=target/bench
mkdir -p "$out"
rm -f "$out"/*.json

server_pid=
stop() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; server_pid=; true; }
trap stop EXIT

# start FLAGS...: a fresh server on a free loopback port; sets $addr and $server_pid.
start() {
    local fifo
    fifo=$(mktemp -u)
    mkfifo "$fifo"
    "$bin/chat-server" --bind 127.0.0.1:0 "$@" >"$fifo" 2>/dev/null &
    server_pid=$!
    read -r -t 10 line <"$fifo" || { echo "bench.sh: the server did not start" >&2; exit 1; }
    rm -f "$fifo"
    addr=${line#listening on }
}

# workload NAME SERVER-FLAGS -- BENCH-ARGS...
workload() {
    local name=$1; shift
    local sflags=()
    while [ "$1" != "--" ]; do sflags+=("$1"); shift; done
    shift
    for i in $(seq 1 "$runs"); do
        start "${sflags[@]}"
        echo "== $name, run $i/$runs: chat-server ${sflags[*]} ; chat-bench $*" >&2
        "$bin/chat-bench" --server "$addr" --server-pid "$server_pid" --json "$@" >"$out/$name-$i.json"
        stop
    done
}

workload fanout --rate 0 -- fanout
workload paced --rate 0 -- fanout --rate 100 -m 500
workload stalled --rate 0 -- fanout --stalled 1
workload idle --max-clients 20000 -- idle -k 5000
workload idle-no-presence --max-clients 20000 --no-presence -- idle -k 5000 --no-presence
workload idle-10k --max-clients 20000 --no-presence -- idle -k 10000 --no-presence --parallel 512

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys, glob, os
out, runs = sys.argv[1], int(sys.argv[2])
def load(name):
    return [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, name + "-[0-9]*.json")))]
med = lambda xs: statistics.median(xs)
print(f"medians of {runs} runs")
print(f"{'workload':<18} {'deliveries/s':>13} {'cpu us/deliv':>13} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'lost':>5} {'peak rss KiB':>13}")
for name in ["fanout", "paced", "stalled"]:
    rs = load(name)
    if not rs: continue
    print(f"{name:<18} {med([r['rate'] for r in rs]):>13.0f} {med([r['server']['cpu_us_per_unit'] for r in rs]):>13.4f} "
          f"{med([r['latency_us']['p50'] for r in rs]):>8.0f} {med([r['latency_us']['p99'] for r in rs]):>8.0f} "
          f"{med([r['latency_us']['p999'] for r in rs]):>9.0f} {max(r['losses'] for r in rs):>5} "
          f"{med([r['server']['peak_rss_kib'] for r in rs]):>13.0f}"
          + (f"   evicted {min(r['stalled_evicted'] for r in rs)}/{rs[0]['stalled']}" if rs[0]['stalled'] else ""))
print()
print(f"{'workload':<18} {'connections':>11} {'rss/conn B':>11} {'peak rss KiB':>13} {'connect s':>10}")
for name in ["idle", "idle-no-presence", "idle-10k"]:
    rs = load(name)
    if not rs: continue
    print(f"{name:<18} {rs[0]['connections']:>11} {med([r['rss_per_connection'] for r in rs]):>11.0f} "
          f"{med([r['server']['peak_rss_kib'] for r in rs]):>13.0f} {med([r['connect_seconds'] for r in rs]):>10.2f}")
PY
