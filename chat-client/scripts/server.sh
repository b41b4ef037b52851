# Sourced by bench.sh and compare.sh: start and stop one chat-server.

server_pid=
stop() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; server_pid=; true; }
trap stop EXIT

# start PREFIX BINARY FLAGS...: a fresh server on a free loopback port, run
# under PREFIX (e.g. `taskset -c 0`, or `env`); sets $addr and $server_pid.
start() {
    local prefix=$1 binary=$2; shift 2
    local fifo
    fifo=$(mktemp -u)
    mkfifo "$fifo"
    # History off unless the workload asks for it (--data DIR or
    # --ephemeral): the relay path is what most workloads measure, and
    # the anchors store nothing either.
    # (A binary from before history has no such flag.) `--data @tmp`
    # stands for a fresh directory of the run's own. Every client comes
    # from 127.0.0.1: no cap on connections per IP (where there is one).
    local history= flags=() arg help cap=()
    help=$("$binary" --help 2>/dev/null)
    grep -q -- --no-history <<<"$help" && history=--no-history
    grep -q -- --max-per-ip <<<"$help" && cap=(--max-per-ip 0)
    for arg in "$@"; do
        case $arg in
        --data | --ephemeral | --no-history) history= ;;
        @tmp) arg=$(mktemp -d) ;;
        esac
        flags+=("$arg")
    done
    $prefix "$binary" --bind 127.0.0.1:0 $history "${cap[@]}" "${flags[@]}" >"$fifo" 2>/dev/null &
    server_pid=$!
    local fd
    exec {fd}<"$fifo"
    read -r -t 10 line <&"$fd" || { echo "$(basename "$0"): the server did not start" >&2; exit 1; }
    addr=${line#listening on }
    # With --tls-bind two more lines follow: read them too (a server
    # writing to a pipe nobody reads would fail), and set $tls_addr and
    # $tls_fingerprint.
    tls_addr= tls_fingerprint=
    if [[ " $* " == *" --tls-bind "* ]]; then
        read -r -t 10 line <&"$fd" && tls_addr=${line#tls listening on }
        read -r -t 10 line <&"$fd" && tls_fingerprint=${line#tls fingerprint }
    fi
    exec {fd}<&-
    rm -f "$fifo"
}
