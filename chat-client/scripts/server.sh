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
    $prefix "$binary" --bind 127.0.0.1:0 "$@" >"$fifo" 2>/dev/null &
    server_pid=$!
    read -r -t 10 line <"$fifo" || { echo "$(basename "$0"): the server did not start" >&2; exit 1; }
    rm -f "$fifo"
    addr=${line#listening on }
}
