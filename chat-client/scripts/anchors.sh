#!/usr/bin/env bash
# Our chat server against its anchors, NATS and Redis, with the same
# chat-bench fanout workloads, payload and checks (`chat-bench --system`).
# Usage, from anywhere in a checkout:
#
#   bash chat-client/scripts/anchors.sh [RUNS]      # RUNS: default 3
#
# Installs nats-server and redis-server from Debian (apt-get) if missing,
# builds release chat-server and chat-bench, then for each workload runs
# every system RUNS times, each run against a fresh server of its own on
# loopback (started here, not the system service; stopped by its pid), and
# prints one table of medians with our figures as ratios to each anchor's.
# Every run's JSON is kept in target/anchors/. Not part of CI: a benchmark.
#
# Server CPU per delivery counts deliveries to other clients only: Redis
# also delivers each message back to its sender (reported apart as
# self_deliveries), which is left out of deliveries/s and of the CPU split.
set -euo pipefail
runs="${1:-3}"
case "$runs" in '' | *[!0-9]* | 0) echo "anchors.sh: RUNS must be a positive number" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."

if ! command -v nats-server >/dev/null || ! command -v redis-server >/dev/null; then
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server redis-server
fi
# Debian puts nats-server in /usr/sbin, which a user's PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
command -v nats-server >/dev/null && command -v redis-server >/dev/null ||
    { echo "anchors.sh: nats-server or redis-server is missing" >&2; exit 2; }

cargo build --release -q -p chat-server -p chat-client --bin chat-server --bin chat-bench
bin=target/release
out=target/anchors
mkdir -p "$out"
rm -f "$out"/*.json
# 500 clients with two Redis connections each, and the servers' ends.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

server_pid=
failed=()
stop() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; server_pid=; }
trap stop EXIT

# open PORT: whether something listens on 127.0.0.1:PORT.
open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: a loopback port nothing listens on, below the ephemeral range
# (the clients' own ports, which a listener could not bind).
free_port() {
    local p low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 12000 ] 2>/dev/null || low=32768
    for _ in $(seq 1 100); do
        p=$((10000 + RANDOM % (low - 10000)))
        open "$p" || { echo "$p"; return; }
    done
    echo "anchors.sh: no free port" >&2; exit 1
}

# start SYSTEM: a fresh server on loopback; sets $addr and $server_pid.
# A server that exits at once (its port taken meanwhile) is tried again on
# another port.
start() {
    local attempt
    for attempt in 1 2 3 4 5; do
        start_once "$1" && return
        echo "anchors.sh: $1 server did not start on $addr (attempt $attempt)" >&2
        stop
    done
    exit 1
}

start_once() {
    local port
    case "$1" in
    chat)
        local fifo line
        fifo=$(mktemp -u)
        mkfifo "$fifo"
        "$bin/chat-server" --bind 127.0.0.1:0 --rate 0 >"$fifo" 2>/dev/null &
        server_pid=$!
        addr="127.0.0.1:0"
        read -r -t 10 line <"$fifo" || { rm -f "$fifo"; return 1; }
        rm -f "$fifo"
        addr=${line#listening on }
        return 0 ;;
    nats)
        port=$(free_port)
        nats-server -a 127.0.0.1 -p "$port" >"$out/nats-server.log" 2>&1 &
        server_pid=$! ;;
    redis)
        port=$(free_port)
        redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --protected-mode yes >"$out/redis-server.log" 2>&1 &
        server_pid=$! ;;
    esac
    addr=127.0.0.1:$port
    for _ in $(seq 1 100); do
        kill -0 "$server_pid" 2>/dev/null || return 1
        open "$port" && return 0
        sleep 0.1
    done
    return 1
}

# workload NAME FANOUT-ARGS...: every system, $runs runs each.
workload() {
    local name=$1; shift
    for i in $(seq 1 "$runs"); do
        for system in chat nats redis; do
            start "$system"
            echo "== $name, $system, run $i/$runs: chat-bench --system $system fanout $*" >&2
            if ! "$bin/chat-bench" --system "$system" --server "$addr" --server-pid "$server_pid" \
                --json fanout "$@" >"$out/$name-$system-$i.json"; then
                failed+=("$name $system run $i")
            fi
            stop
        done
    done
}

# Saturated: 50 clients x 2000 messages x 64 B, full speed.
workload saturated
# Paced: 50 clients x 100 msgs/s, and 500 clients x 10 msgs/s.
workload paced-50x100 --rate 100 -m 500
workload paced-500x10 -n 500 --rate 10 -m 50

python3 - "$out" "$runs" <<'PY'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def load(name, system):
    found = []
    for i in range(1, runs + 1):
        try:
            found.append(json.load(open(os.path.join(out, f"{name}-{system}-{i}.json"))))
        except (OSError, ValueError):
            pass  # the run could not report (chat-bench exited 2)
    return found
def med(rs, f):
    xs = [f(r) for r in rs]
    return statistics.median(xs) if xs else float("nan")
cols = {
    "deliveries/s": lambda r: r["rate"],
    "cpu us/deliv": lambda r: r["server"]["cpu_us_per_unit"],
    "p50 us": lambda r: r["latency_us"]["p50"],
    "p99 us": lambda r: r["latency_us"]["p99"],
}
fmt = {"deliveries/s": "{:>13.0f}", "cpu us/deliv": "{:>13.3f}", "p50 us": "{:>10.0f}", "p99 us": "{:>10.0f}"}
print(f"medians of {runs} run(s); ratios are ours / the anchor's")
print(f"{'workload':<14} {'system':<8} {'deliveries/s':>13} {'cpu us/deliv':>13} {'p50 us':>10} {'p99 us':>10} {'passed':>7} {'self deliv':>11}")
for name in ["saturated", "paced-50x100", "paced-500x10"]:
    ours = load(name, "chat")
    m = {c: med(ours, f) for c, f in cols.items()}
    for system in ["chat", "nats", "redis"]:
        rs = ours if system == "chat" else load(name, system)
        v = {c: med(rs, f) for c, f in cols.items()}
        passed = f"{sum(1 for r in rs if r['deliveries'] == r['expected'] and r['losses'] == 0 and r['duplicates'] == 0 and r['order_violations'] == 0 and r['corrupt'] == 0)}/{runs}"
        selfd = f"{med(rs, lambda r: r.get('self_deliveries', 0)):.0f}" if rs else "-"
        print(f"{name:<14} {system:<8} " + " ".join(fmt[c].format(v[c]) for c in cols) + f" {passed:>7} {selfd:>11}")
        if system != "chat":
            ratio = lambda c: m[c] / v[c] if v[c] else float("nan")
            print(f"{'':<14} {'ours/' + system:<8} " + " ".join(f"{ratio(c):>{w}.2f}x" for c, w in zip(cols, [12, 12, 9, 9])))
PY
if [ ${#failed[@]} -gt 0 ]; then
    printf 'anchors.sh: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
