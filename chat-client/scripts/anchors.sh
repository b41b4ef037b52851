#!/usr/bin/env bash
# Our chat server against its anchors, NATS and Redis, with the same
# chat-bench workloads, payload and checks (`chat-bench --system`).
# Usage, from anywhere in a checkout:
#
#   bash chat-client/scripts/anchors.sh [RUNS]         # RUNS: default 3
#   ONLY='scale|500' bash chat-client/scripts/anchors.sh 1
#
# Installs nats-server and redis-server from Debian (apt-get) if missing,
# builds release chat-server and chat-bench (into $CARGO_TARGET_DIR if set,
# else target/), then for each workload runs every system RUNS times, each
# run against a fresh server of its own on loopback (started here, not the
# system service; stopped by its pid), and prints one table of medians with
# our figures as ratios to each anchor's. ONLY=REGEX runs only the
# workloads whose names match. Every run's JSON (and its exit status, .rc)
# is kept in target/anchors/. Not part of CI: a benchmark.
#
# Workloads (the names are BENCHMARKS.md's rows):
#   saturated     fanout, 50 clients x 2000 x 64 B, full speed
#   paced-50x100  fanout, 50 clients x 100 msgs/s x 500
#   paced-500x10  rooms, 500 clients x 10 msgs/s x 50 in 10 rooms of 50:
#                 the same 245,000 deliveries/s as paced-50x100, ten times
#                 the clients
#   scale-10k     rooms, 10,000 clients in 100 rooms of 100, 1,000 of them
#                 (10 a room) sending 1 msg/s for 20 s; 99,000 deliveries/s
#
# Systems (SYSTEMS='chat chat-nc nats redis' by default): chat (ours,
# defaults, history off: the anchors store nothing), chat-nc (ours writing
# at once, --coalesce 0: what coalescing buys), chat-t1 (ours on one worker
# thread), nats, redis. The first must be chat: ratios are against it.
#
# Server CPU per delivery counts deliveries to other clients only: Redis
# also delivers each message back to its sender (reported apart as
# self_deliveries), which is left out of deliveries/s and of the CPU split.
# Wake-ups per delivery: times a server thread was put on a CPU
# (/proc/PID/task/*/schedstat), per delivery. Peak RSS: the server's VmHWM.
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
bin=${CARGO_TARGET_DIR:-target}/release
out=target/anchors
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.rc

# Open files: scale-10k holds 10,000 clients (11,000 sockets against Redis:
# one PUBLISH connection per sender) in chat-bench and as many in the
# server, each its own process. Raise the soft limit as far as the hard
# one lets us; every process here must fit under it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds=$(ulimit -n)
scale_fds=12100
if [ "$fds" != unlimited ] && [ "$fds" -lt "$scale_fds" ]; then
    echo "anchors.sh: the open-file limit is $fds, scale-10k needs $scale_fds: skipping it" >&2
    skip_scale=1
else
    skip_scale=
fi

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

# start SYSTEM FLAGS...: a fresh server on loopback with extra FLAGS; sets
# $addr and $server_pid. A server that exits at once (its port taken
# meanwhile) is tried again on another port.
start() {
    local attempt
    for attempt in 1 2 3 4 5; do
        start_once "$@" && return
        echo "anchors.sh: $1 server did not start on $addr (attempt $attempt)" >&2
        stop
    done
    exit 1
}

start_once() {
    local system=$1 port
    shift
    case "$system" in
    chat | chat-nc | chat-t1)
        local fifo line nc=()
        # chat-nc: the same server writing at once (no coalescing), to
        # show what coalescing buys within the same run; chat-t1: on one
        # worker thread.
        [ "$system" = chat-nc ] && nc=(--coalesce 0)
        [ "$system" = chat-t1 ] && nc=(--threads 1)
        fifo=$(mktemp -u)
        mkfifo "$fifo"
        # History off: the anchors store nothing either. Every client
        # comes from 127.0.0.1: no cap per IP.
        "$bin/chat-server" --bind 127.0.0.1:0 --rate 0 --no-history --max-per-ip 0 "${nc[@]}" "$@" >"$fifo" 2>/dev/null &
        server_pid=$!
        addr="127.0.0.1:0"
        read -r -t 10 line <"$fifo" || { rm -f "$fifo"; return 1; }
        rm -f "$fifo"
        addr=${line#listening on }
        return 0 ;;
    nats)
        port=$(free_port)
        nats-server -a 127.0.0.1 -p "$port" "$@" >"$out/nats-server.log" 2>&1 &
        server_pid=$! ;;
    redis)
        port=$(free_port)
        redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --protected-mode yes "$@" >"$out/redis-server.log" 2>&1 &
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

# Per-workload server flags, by system: set by `workload` from its
# CHAT=... NATS=... REDIS=... words (flags separated by commas).
flags() {
    local system=$1 spec=$2 word
    for word in $spec; do
        case "$word" in "${system^^}="*) tr ',' '\n' <<<"${word#*=}" ;; esac
    done
}

# workload NAME [SYSTEM=FLAG,FLAG...]... -- CHAT-BENCH-ARGS...: every
# system, $runs runs each; SYSTEM= words add server flags for that system.
systems=${SYSTEMS:-chat chat-nc nats redis}
names=()
workload() {
    local name=$1 spec=
    shift
    while [ "$1" != "--" ]; do spec+=" $1"; shift; done
    shift
    [[ "$name" =~ ${ONLY:-.} ]] || return 0
    if [ "$name" = scale-10k ] && [ -n "$skip_scale" ]; then return 0; fi
    names+=("$name")
    local i system extra
    for i in $(seq 1 "$runs"); do
        for system in $systems; do
            local driven=${system%-*}
            mapfile -t extra < <(flags "$driven" "$spec")
            start "$system" "${extra[@]}"
            echo "== $name, $system, run $i/$runs: chat-bench --system $driven $*" >&2
            local rc=0
            "$bin/chat-bench" --system "$driven" --server "$addr" --server-pid "$server_pid" \
                --json "$@" >"$out/$name-$system-$i.json" || rc=$?
            echo "$rc" >"$out/$name-$system-$i.rc"
            [ "$rc" -eq 0 ] || failed+=("$name $system run $i (exit $rc)")
            stop
        done
    done
}

# Saturated: 50 clients x 2000 messages x 64 B, full speed.
workload saturated -- fanout
# Paced: 50 clients x 100 msgs/s, and 500 clients x 10 msgs/s in rooms of
# 50 (each client in one), both 50 x 100 x 49 = 245,000 deliveries/s.
workload paced-50x100 -- fanout --rate 100 -m 500
workload paced-500x10 -- rooms -n 500 --room-size 50 -k 1 --rate 10 -m 50
# Scale: 10,000 clients in 100 rooms of 100, 1,000 of them sending 1 msg/s
# for 20 s, the other 9,000 only listening; handshakes 512 at a time.
# Our server and Redis take 10,000 clients by default: raise both limits.
# NATS allows 65,536 connections by default.
workload scale-10k CHAT=--max-clients,20000 REDIS=--maxclients,12000 -- \
    rooms -n 10000 --room-size 100 -k 1 --senders 1000 --rate 1 -m 20 --parallel 512 --timeout 60

python3 - "$out" "$runs" "$systems" "${names[@]}" <<'PY'
import json, math, os, statistics, sys
out, runs, systems, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
def load(name, system):
    found = []
    for i in range(1, runs + 1):
        base = os.path.join(out, f"{name}-{system}-{i}")
        try:
            r = json.load(open(base + ".json"))
        except (OSError, ValueError):
            continue  # the run could not report (chat-bench exited 2)
        try:
            r["_rc"] = int(open(base + ".rc").read())
        except (OSError, ValueError):
            r["_rc"] = None
        found.append(r)
    return found
def med(rs, f):
    xs = [x for x in (f(r) for r in rs) if x is not None]
    return statistics.median(xs) if xs else float("nan")
def server(r, key):
    return (r.get("server") or {}).get(key)
cols = [
    ("deliveries/s", lambda r: r["rate"], "{:>12.0f}", 12),
    ("cpu us/del", lambda r: server(r, "cpu_us_per_unit"), "{:>10.3f}", 10),
    ("wakeups/del", lambda r: server(r, "wakeups_per_unit"), "{:>11.4f}", 11),
    ("p50 us", lambda r: r["latency_us"]["p50"], "{:>9.0f}", 9),
    ("p99 us", lambda r: r["latency_us"]["p99"], "{:>9.0f}", 9),
    ("peak MiB", lambda r: (server(r, "peak_rss_kib") or 0) / 1024 or None, "{:>9.1f}", 9),
]
print(f"medians of {runs} run(s); ratios are ours / the anchor's")
print(f"{'workload':<13} {'system':<11} " + " ".join(f"{c:>{w}}" for c, _, _, w in cols) + f" {'passed':>7} {'self deliv':>10}")
for name in names:
    ours = load(name, "chat")
    m = [med(ours, f) for _, f, _, _ in cols]
    for system in systems:
        rs = ours if system == "chat" else load(name, system)
        v = [med(rs, f) for _, f, _, _ in cols]
        passed = f"{sum(1 for r in rs if r['_rc'] == 0)}/{runs}"
        selfd = f"{med(rs, lambda r: r.get('self_deliveries', 0)):.0f}" if rs else "-"
        print(f"{name:<13} {system:<11} " + " ".join(fmt.format(x) for (_, _, fmt, _), x in zip(cols, v)) + f" {passed:>7} {selfd:>10}")
        if system != "chat":
            ratio = [a / b if b and not math.isnan(b) else float("nan") for a, b in zip(m, v)]
            print(f"{'':<13} {'ours/' + system:<11} " + " ".join(f"{x:>{w - 1}.2f}x" for (_, _, _, w), x in zip(cols, ratio)))
PY
if [ ${#failed[@]} -gt 0 ]; then
    printf 'anchors.sh: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
