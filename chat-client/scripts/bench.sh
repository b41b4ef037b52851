#!/usr/bin/env bash
# Runs every chat-bench workload RUNS times (default 3), each against a fresh
# release chat-server in its own process on loopback, and prints the median
# of each figure. Usage, from the repository root:
#
#   bash chat-client/scripts/bench.sh [RUNS]
#
# Figures go to stdout as a table; every run's JSON is kept in target/bench/.
# A run that fails (chat-bench exits non-zero) is named at the end, and the
# script then exits 1; the other workloads still run.
set -euo pipefail
runs="${1:-3}"
case "$runs" in '' | *[!0-9]*) echo "bench.sh: RUNS must be a number" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
cargo build --release -q -p chat-server -p chat-client --bin chat-server --bin chat-bench
bin=target/release
out=target/bench
mkdir -p "$out"
rm -f "$out"/*.json

. chat-client/scripts/server.sh

# workload NAME SERVER-PREFIX BENCH-PREFIX SERVER-FLAGS... -- BENCH-ARGS...
workload() {
    local name=$1 sprefix=$2 bprefix=$3; shift 3
    local sflags=()
    while [ "$1" != "--" ]; do sflags+=("$1"); shift; done
    shift
    for i in $(seq 1 "$runs"); do
        start "$sprefix" "$bin/chat-server" "${sflags[@]}"
        echo "== $name, run $i/$runs: $sprefix chat-server ${sflags[*]} ; $bprefix chat-bench $*" >&2
        if ! $bprefix "$bin/chat-bench" --server "$addr" --server-pid "$server_pid" --json "$@" >"$out/$name-$i.json"; then
            failed+=("$name run $i")
        fi
        stop
    done
}

# Fan-out as the issue states it: 50 clients x 2000 messages x 64 B, full speed.
workload fanout env env --threads 1 --rate 0 -- fanout
# A longer run, and the same with one client that never reads.
workload fanout-10k env env --threads 1 --rate 0 -- fanout -m 10000
workload stalled env env --threads 1 --rate 0 -- fanout -m 10000 --stalled 1
# Latency at 50 clients x 100 messages/s, server and load generator each on a core of its own.
workload paced "taskset -c 0" "taskset -c 1" --threads 1 --rate 0 -- --threads 1 fanout --rate 100 -m 500
# Idle connections: with join notices (K(K-1)/2 of them), without, and 10,000 clients.
workload idle env env --max-clients 20000 -- idle -k 5000
workload idle-quiet env env --max-clients 20000 --no-presence -- idle -k 5000 --no-presence
workload idle-10k env env --max-clients 20000 --no-presence -- idle -k 10000 --no-presence --parallel 512
# Memory given back: 20 rounds of 2,000 clients stalled inside a 65,000-byte frame, then closed.
workload soak env env --max-clients 20000 --rate 0 -- soak

python3 - "$out" "$runs" <<'PY'
import json, os, re, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def load(name):
    runs = re.compile(re.escape(name) + r"-[0-9]+\.json$")
    found = []
    for f in sorted(os.listdir(out)):
        if runs.match(f):
            try:
                found.append(json.load(open(os.path.join(out, f))))
            except ValueError:
                pass  # the run could not report (chat-bench exited 2)
    return found
med = lambda xs: statistics.median(xs)
print(f"medians of {runs} runs")
print(f"{'workload':<18} {'deliveries/s':>13} {'cpu us/deliv':>13} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'lost':>5} {'peak rss KiB':>13}")
for name in ["fanout", "fanout-10k", "stalled", "paced"]:
    rs = load(name)
    if not rs: continue
    print(f"{name:<18} {med([r['rate'] for r in rs]):>13.0f} {med([r['server']['cpu_us_per_unit'] for r in rs]):>13.4f} "
          f"{med([r['latency_us']['p50'] for r in rs]):>8.0f} {med([r['latency_us']['p99'] for r in rs]):>8.0f} "
          f"{med([r['latency_us']['p999'] for r in rs]):>9.0f} {max(r['losses'] for r in rs):>5} "
          f"{med([r['server']['peak_rss_kib'] for r in rs]):>13.0f}"
          + (f"   evicted {min(r['stalled_evicted'] for r in rs)}/{rs[0]['stalled']}" if rs[0]['stalled'] else ""))
base, slow = load("fanout-10k"), load("stalled")
if base and slow:
    print(f"stalled/fanout-10k deliveries/s ratio: {med([r['rate'] for r in slow]) / med([r['rate'] for r in base]):.3f}")
print()
print(f"{'workload':<18} {'connections':>11} {'rss/conn B':>11} {'peak rss KiB':>13} {'connect s':>10}")
for name in ["idle", "idle-quiet", "idle-10k"]:
    rs = load(name)
    if not rs: continue
    print(f"{name:<18} {rs[0]['connections']:>11} {med([r['rss_per_connection'] for r in rs]):>11.0f} "
          f"{med([r['server']['peak_rss_kib'] for r in rs]):>13.0f} {med([r['connect_seconds'] for r in rs]):>10.2f}")
rs = load("soak")
if rs:
    print()
    print(f"{'workload':<18} {'rounds':>6} {'clients':>7} {'base KiB':>9} {'max peak KiB':>13} {'first after':>12} {'last after':>11} {'result':>7}")
    for r in rs:
        rounds = r["rounds"]
        print(f"{'soak':<18} {len(rounds):>6} {r['clients']:>7} {r['baseline_rss_kib']:>9} "
              f"{max((x['peak_rss_kib'] for x in rounds), default=0):>13} "
              f"{rounds[0]['after_rss_kib'] if rounds else 0:>12} {rounds[-1]['after_rss_kib'] if rounds else 0:>11} "
              f"{'PASS' if r['failure'] is None else 'FAIL':>7}")
PY
if [ ${#failed[@]} -gt 0 ]; then
    printf 'bench.sh: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
