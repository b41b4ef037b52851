#!/usr/bin/env bash
# Runs every chat-bench workload RUNS times (default 3), each against a fresh
# release chat-server in its own process on loopback, and prints the median
# of each figure. Usage, from the repository root:
#
#   bash chat-client/scripts/bench.sh [RUNS]
#   ONLY='^(fanout|rooms-.*|dm.*|idle.*)$' bash chat-client/scripts/bench.sh 5
#   ONLY=history bash chat-client/scripts/bench.sh 1   # history on, every mode
#
# Run i does every workload once before run i + 1 starts, so that the ratios
# between workloads (rooms against one room, named idle clients against
# version 1 ones) are taken within one run, under the same load from
# whatever else the machine is doing; the ratios shown are medians of those
# per-run ratios. ONLY=REGEX runs only the workloads whose names match.
#
# Figures go to stdout as tables; every run's JSON is kept in target/bench/.
# A run that fails (chat-bench exits non-zero) is named at the end, and the
# script then exits 1; the other workloads still run.
set -euo pipefail
runs="${1:-3}"
case "$runs" in '' | *[!0-9]*) echo "bench.sh: RUNS must be a number" >&2; exit 2 ;; esac
cd "$(dirname "$0")/../.."
cargo build --release -q -p chat-server -p chat-client --bin chat-server --bin chat-bench
bin=${CARGO_TARGET_DIR:-target}/release
out=target/bench
mkdir -p "$out"
rm -f "$out"/*.json
failed=()

. chat-client/scripts/server.sh

# workload NAME SERVER-PREFIX BENCH-PREFIX SERVER-FLAGS... -- BENCH-ARGS...
# adds a workload (no argument may contain a space or a '|').
specs=()
workload() {
    local name=$1 sprefix=$2 bprefix=$3; shift 3
    local sflags=()
    while [ "$1" != "--" ]; do sflags+=("$1"); shift; done
    shift
    [[ "$name" =~ ${ONLY:-.} ]] || return 0
    specs+=("$name|$sprefix|$bprefix|${sflags[*]}|$*")
}

# Fan-out as the issue states it: 50 clients x 2000 messages x 64 B, full speed.
workload fanout env env --threads 1 --rate 0 -- fanout
# A longer run, and the same with one client that never reads.
workload fanout-10k env env --threads 1 --rate 0 -- fanout -m 10000
workload stalled env env --threads 1 --rate 0 -- fanout -m 10000 --stalled 1
# Latency at 50 clients x 100 messages/s, server and load generator each on a core of its own.
workload paced "taskset -c 0" "taskset -c 1" --threads 1 --rate 0 -- --threads 1 fanout --rate 100 -m 500
# Named rooms, full speed, about as many deliveries as fanout's 4.9 M: one
# room of 50 (fanout through Say/Said), 1,000 clients in 200 rooms of 10 and
# in 20 rooms of 100, each client in 2 rooms.
workload rooms-1x50 env env --threads 1 --rate 0 -- rooms -n 50 --room-size 50 -k 1 -m 2000
workload rooms-200x10 env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 10 -k 2 -m 544
workload rooms-20x100 env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 100 -k 2 -m 50
# The same 1,000 clients all in one room (5 messages each, 4.995 M
# deliveries): what the rooms of 10 and of 100 are compared with, so that
# the clients, their connections and the deliveries are the same and only
# the rooms differ.
workload rooms-1x1000 env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 1000 -k 1 -m 5
# The server batches the relays of one room that arrive together: a sender
# that changes rooms at every message makes one buffer per message per
# recipient, so the window must be small enough for 18 senders' messages to
# fit a reader's outbox (1,024 buffers).
workload rooms-200x10-run1 env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 10 -k 2 -m 544 --run 1 --window 40
# Readers behind many senders' short runs: 1,000 clients in rooms of 100
# saying 6 messages per room before moving on, 200 messages ahead of their
# slowest reader. Each reader's queue holds one short buffer per sender and
# run; the server used to evict readers as slow consumers at 1,024 buffers
# (about 100 KB of an 8 MiB limit).
workload rooms-20x100-deep env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 100 -k 2 -m 200 --run 6 --window 200
# The same 1,000 clients in rooms of 10 at 10 messages/s each (90,000 deliveries/s).
workload rooms-paced env env --threads 1 --rate 0 --max-clients 20000 -- rooms -n 1000 --room-size 10 -k 2 -m 50 --rate 10
# Direct-message round trips, 1,000 a second over 100 pairs (2,000 Tells a
# second), pinned as paced is, and unpinned.
workload dm "taskset -c 0" "taskset -c 1" --threads 1 --rate 0 --tell-rate 0 -- --threads 1 dm -p 100 -m 100 --rate 1000
workload dm-unpinned env env --rate 0 --tell-rate 0 -- dm -p 100 -m 100 --rate 1000
# For reference, the same traffic without names: 2 version 1 clients each
# sending 1,000 messages/s to the other (2,000 deliveries/s), pinned.
workload dm-ref "taskset -c 0" "taskset -c 1" --threads 1 --rate 0 -- --threads 1 fanout -n 2 -m 10000 --rate 1000
# Idle connections: with join notices (K(K-1)/2 of them), without, and 10,000 clients.
workload idle env env --max-clients 20000 -- idle -k 5000
workload idle-quiet env env --max-clients 20000 --no-presence -- idle -k 5000 --no-presence
workload idle-10k env env --max-clients 20000 --no-presence -- idle -k 10000 --no-presence --parallel 512
# Named idle clients in 3 rooms (the lobby and 2 rooms of 10), and in 4.
workload idle-rooms3 env env --max-clients 20000 -- idle -k 5000 --rooms 3
workload idle-rooms4 env env --max-clients 20000 -- idle -k 5000 --rooms 4
# TLS (a self-signed certificate, clients pinning its fingerprint): the
# saturated fan-out beside `fanout` in the same run, idle TLS clients beside
# idle-quiet (memory per connection; target 8 KiB), and full TLS handshakes
# a second (idle's connect rate; the server's CPU per connection). A
# workload whose server flags have --tls-bind drives its TLS port.
tls="--tls-bind 127.0.0.1:0 --tls-self-signed"
# shellcheck disable=SC2086
workload fanout-tls env env --threads 1 --rate 0 $tls -- fanout
# shellcheck disable=SC2086
workload idle-tls env env --max-clients 20000 --no-presence $tls -- idle -k 5000 --no-presence
# The realistic paced load over TLS, beside `paced` (50 clients x 100 msgs/s, pinned).
# shellcheck disable=SC2086
workload paced-tls "taskset -c 0" "taskset -c 1" --threads 1 --rate 0 $tls -- --threads 1 fanout --rate 100 -m 500
# Logins a second (throttling off): by password, each an Argon2id hash
# (two at once, --hash-workers 2), in plaintext and over TLS; by token (no
# hash). 8 clients, each logging in to its own account and leaving, 400 times.
logins="--rate 0 --login-rate 0 --login-rate-ip 0 --register-rate 0 --ephemeral"
# shellcheck disable=SC2086
workload login-password env env $logins -- login --clients 8 --logins 400 --by password
# shellcheck disable=SC2086
workload login-password-tls env env $logins $tls -- login --clients 8 --logins 400 --by password
# shellcheck disable=SC2086
workload login-token env env $logins -- login --clients 8 --logins 2000 --by token
# History on (every message stored before it is delivered): the saturated
# one-room fan-out with the store on disk (fsync per batch) and in memory,
# beside `fanout` above, which has history off.
workload fanout-history env env --threads 1 --rate 0 --data @tmp -- fanout
workload fanout-ephemeral env env --threads 1 --rate 0 --ephemeral -- fanout
# Send-to-ack latency at 50 clients x 100 messages/s in the lobby (paced's
# load, pinned as paced is): each Say timed to its Stored, every delivery
# checked with its id and prev link; the store on disk, and in memory.
workload history-ack "taskset -c 0" "taskset -c 1" --threads 1 --rate 0 --data @tmp -- --threads 1 history ack -n 50 --rate 100 -m 500
workload history-ack-mem "taskset -c 0" "taskset -c 1" --threads 1 --rate 0 --ephemeral -- --threads 1 history ack -n 50 --rate 100 -m 500
# Resume: 500 messages stored in a room, paged in end to end 50 times by a
# client that joins it, then Recent { 50 } 50 times.
workload history-resume env env --rate 0 --data @tmp -- history resume -k 500 --repeat 50 --recent 50
# Memory given back: 20 rounds of 2,000 clients stalled inside a 65,000-byte frame, then closed.
workload soak env env --max-clients 20000 --rate 0 -- soak

for i in $(seq 1 "$runs"); do
    for spec in "${specs[@]}"; do
        IFS='|' read -r name sprefix bprefix sflags bargs <<<"$spec"
        # shellcheck disable=SC2086 # the flags are words
        start "$sprefix" "$bin/chat-server" $sflags
        echo "== $name, run $i/$runs: $sprefix chat-server $sflags ; $bprefix chat-bench $bargs" >&2
        target=(--server "$addr")
        if [ -n "$tls_addr" ]; then
            target=(--server "$tls_addr" --tls --fingerprint "$tls_fingerprint")
        fi
        # shellcheck disable=SC2086
        if ! $bprefix "$bin/chat-bench" "${target[@]}" --server-pid "$server_pid" --json $bargs >"$out/$name-$i.json"; then
            failed+=("$name run $i")
        fi
        stop
    done
done

python3 - "$out" "$runs" <<'PY'
import json, os, re, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def load(name):
    """Run number -> report, for the runs that reported."""
    pattern = re.compile(re.escape(name) + r"-([0-9]+)\.json$")
    found = {}
    for f in sorted(os.listdir(out)):
        m = pattern.match(f)
        if m:
            try:
                found[int(m.group(1))] = json.load(open(os.path.join(out, f)))
            except ValueError:
                pass  # the run could not report (chat-bench exited 2)
    return found
med = lambda xs: statistics.median(xs)
def ratio(a, b, f):
    """Median over runs of f(a's run i) / f(b's run i)."""
    ra, rb = load(a), load(b)
    xs = [f(ra[i]) / f(rb[i]) for i in ra if i in rb and f(rb[i])]
    return f"{med(xs):.3f} (runs: {', '.join(f'{x:.2f}' for x in xs)})" if xs else None
print(f"medians of {runs} runs")
# bench cores: chat-bench's own CPU over the run's seconds (near its threads:
# the run measured the load generator, not the server).
cores = lambda r: r.get("load_cpu_seconds", float("nan")) / max(r["seconds"], 1e-9)
print(f"{'workload':<18} {'deliveries/s':>13} {'cpu us/deliv':>13} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'lost':>5} {'peak rss KiB':>13} {'bench cores':>11}")
for name in ["fanout", "fanout-tls", "fanout-10k", "stalled", "paced", "paced-tls", "rooms-1x50", "rooms-200x10", "rooms-20x100", "rooms-1x1000", "rooms-20x100-deep", "rooms-200x10-run1", "rooms-paced", "dm-ref", "fanout-history", "fanout-ephemeral"]:
    rs = list(load(name).values())
    if not rs: continue
    print(f"{name:<18} {med([r['rate'] for r in rs]):>13.0f} {med([r['server']['cpu_us_per_unit'] for r in rs]):>13.4f} "
          f"{med([r['latency_us']['p50'] for r in rs]):>8.0f} {med([r['latency_us']['p99'] for r in rs]):>8.0f} "
          f"{med([r['latency_us']['p999'] for r in rs]):>9.0f} {max(r['losses'] for r in rs):>5} "
          f"{med([r['server']['peak_rss_kib'] for r in rs]):>13.0f} {med([cores(r) for r in rs]):>11.2f}"
          + (f"   evicted {min(r['stalled_evicted'] for r in rs)}/{rs[0]['stalled']}" if rs[0]['stalled'] else "")
          + (f"   misdirected {max(r['misdirected'] for r in rs)}, receivers off {max(r['mismatched'] for r in rs)}" if rs[0].get('rooms') else ""))
for a, b in [("fanout-tls", "fanout"), ("paced-tls", "paced"), ("stalled", "fanout-10k"), ("rooms-1x50", "fanout"), ("rooms-200x10", "fanout"), ("rooms-20x100", "fanout"), ("rooms-200x10", "rooms-1x50"), ("rooms-20x100", "rooms-1x50"), ("rooms-200x10", "rooms-1x1000"), ("rooms-20x100", "rooms-1x1000"), ("rooms-200x10-run1", "rooms-200x10"), ("fanout-history", "fanout"), ("fanout-ephemeral", "fanout")]:
    for label, f in [("deliveries/s", lambda r: r["rate"]), ("cpu/delivery", lambda r: r["server"]["cpu_us_per_unit"])]:
        x = ratio(a, b, f)
        if x: print(f"{a}/{b} {label} ratio: {x}")
rs = list(load("dm").values()) + list(load("dm-unpinned").values())
if rs:
    print()
    print(f"{'workload':<18} {'round trips/s':>13} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'cpu us/DM':>10} {'cpu us/rt':>10} {'lost':>5}")
    for name in ["dm", "dm-unpinned"]:
        rs = list(load(name).values())
        if not rs: continue
        print(f"{name:<18} {med([r['rate'] for r in rs]):>13.0f} {med([r['latency_us']['p50'] for r in rs]):>8.0f} "
              f"{med([r['latency_us']['p99'] for r in rs]):>8.0f} {med([r['latency_us']['p999'] for r in rs]):>9.0f} "
              f"{med([r['server']['cpu_us_per_unit'] for r in rs]):>10.2f} {med([r['cpu_us_per_round_trip'] for r in rs]):>10.2f} "
              f"{max(r['losses'] for r in rs):>5}")
idles = ["idle", "idle-quiet", "idle-tls", "idle-10k", "idle-rooms3", "idle-rooms4"]
if any(load(n) for n in idles):
    print()
    print(f"{'workload':<18} {'connections':>11} {'rooms':>5} {'rss/conn B':>11} {'peak rss KiB':>13} {'connect s':>10} {'handshakes/s':>12} {'cpu us/conn':>11}")
for name in idles:
    rs = list(load(name).values())
    if not rs: continue
    print(f"{name:<18} {rs[0]['connections']:>11} {rs[0].get('rooms', 0):>5} {med([r['rss_per_connection'] for r in rs]):>11.0f} "
          f"{med([r['server']['peak_rss_kib'] for r in rs]):>13.0f} {med([r['connect_seconds'] for r in rs]):>10.2f} "
          f"{med([r['connections'] / max(r['connect_seconds'], 1e-9) for r in rs]):>12.0f} {med([r['server']['cpu_us_per_unit'] for r in rs]):>11.1f}")
for a, b in [("idle-tls", "idle-quiet")]:
    for label, f in [("rss per connection", lambda r: r["rss_per_connection"]), ("handshakes/s", lambda r: r["connections"] / max(r["connect_seconds"], 1e-9)), ("server cpu per connection", lambda r: r["server"]["cpu_us_per_unit"])]:
        x = ratio(a, b, f)
        if x: print(f"{a}/{b} {label} ratio: {x}")
for a in ["idle-rooms3", "idle-rooms4"]:
    x = ratio(a, "idle", lambda r: r["rss_per_connection"])
    if x: print(f"{a}/idle rss per connection ratio: {x}")
logins = ["login-password", "login-password-tls", "login-token"]
if any(load(n) for n in logins):
    print()
    print(f"{'workload':<18} {'logins/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/login':>13} {'failed':>6}")
for name in logins:
    rs = list(load(name).values())
    if not rs: continue
    print(f"{name:<18} {med([r['logins_per_second'] for r in rs]):>9.1f} {med([r['latency']['p50'] for r in rs]) / 1000:>8.2f} "
          f"{med([r['latency']['p99'] for r in rs]) / 1000:>8.2f} {med([r['server']['cpu_us_per_unit'] for r in rs]):>13.0f} "
          f"{max(r['failed'] for r in rs):>6}")
x = ratio("dm", "dm-ref", lambda r: r["server"]["cpu_us_per_unit"])
if x: print(f"dm/dm-ref server cpu per message ratio: {x}")
rs = [r for n in ["history-ack", "history-ack-mem"] for r in load(n).values()]
if rs:
    print()
    print(f"{'workload':<18} {'acks/s':>8} {'deliveries/s':>13} {'cpu us/msg':>11} {'cpu us/deliv':>13} {'ack p50 us':>11} {'ack p99 us':>11} {'ack p99.9':>10} {'deliv p99':>10} {'lost':>5} {'broken':>6}")
    for name in ["history-ack", "history-ack-mem"]:
        rs = list(load(name).values())
        if not rs: continue
        print(f"{name:<18} {med([r['ack_rate'] for r in rs]):>8.0f} {med([r['rate'] for r in rs]):>13.0f} "
              f"{med([r['cpu_us_per_message'] for r in rs]):>11.2f} {med([r['server']['cpu_us_per_unit'] for r in rs]):>13.4f} "
              f"{med([r['latency_us']['p50'] for r in rs]):>11.0f} {med([r['latency_us']['p99'] for r in rs]):>11.0f} "
              f"{med([r['latency_us']['p999'] for r in rs]):>10.0f} {med([r['delivery_latency_us']['p99'] for r in rs]):>10.0f} "
              f"{max(r['losses'] + r['expected_acks'] - r['acks'] for r in rs):>5} "
              f"{max(r['broken_links'] + r['id_violations'] + r['duplicate_acks'] + r['unstored'] for r in rs):>6}")
    for a in ["history-ack", "history-ack-mem"]:
        x = ratio(a, "paced", lambda r: r["server"]["cpu_us_per_unit"])
        if x: print(f"{a}/paced cpu/delivery ratio: {x}")
rs = list(load("history-resume").values())
if rs:
    print()
    print(f"{'workload':<18} {'messages':>8} {'pages':>5} {'resume p50 us':>14} {'resume p99 us':>14} {'recent p50 us':>14} {'recent p99 us':>14} {'cpu us/resume':>14} {'cpu us/recent':>14} {'wrong':>5}")
    print(f"{'history-resume':<18} {rs[0]['messages']:>8} {rs[0]['pages']:>5} "
          f"{med([r['latency_us']['p50'] for r in rs]):>14.0f} {med([r['latency_us']['p99'] for r in rs]):>14.0f} "
          f"{med([r['recent_latency_us']['p50'] for r in rs]):>14.0f} {med([r['recent_latency_us']['p99'] for r in rs]):>14.0f} "
          f"{med([r['server']['cpu_us_per_unit'] for r in rs]):>14.1f} {med([r['recent_cpu_us'] for r in rs]):>14.1f} "
          f"{max(r['wrong'] for r in rs):>5}")
rs = list(load("soak").values())
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
