#!/usr/bin/env bash
# Conformance of an already-built chat-server against chat-proto/PROTOCOL.md, through
# .ci/spec_client.py (a client written from the document alone). Builds nothing.
#   .ci/spec_client.sh target/debug/chat-server
# Runs the main checks against a server with default settings, then the timer and shutdown
# checks against one with short timers. Exit status: 0 if both runs pass, 1 otherwise.
set -u
bin=${1:?usage: $0 path/to/chat-server}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# start ARGS...: the server on a free loopback port; sets pid and addr.
start() {
  mkfifo "$tmp/out.$$.$#"
  "$bin" --bind 127.0.0.1:0 "$@" >"$tmp/out.$$.$#" 2>>"$tmp/server.log" &
  pid=$!
  exec 3<"$tmp/out.$$.$#"
  addr=
  local line
  while read -t 15 -r line <&3; do
    case $line in "listening on "*) addr=${line#listening on }; break ;; esac
  done
  if [ -z "$addr" ]; then
    echo "spec_client.sh: the server did not say 'listening on ADDR' within 15 s" >&2
    cat "$tmp/server.log" >&2
    exit 1
  fi
}

# stop: end the server we started and wait for it; its stdout stays drained until then.
stop() {
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  pid=
  exec 3<&-
}

status=0
start
timeout 70 python3 "$here/spec_client.py" "$addr" || status=1
stop

hs=1 idle=2 frame=1
start --handshake-timeout "${hs}s" --idle-timeout "${idle}s" --frame-timeout "${frame}s"
timeout 70 python3 "$here/spec_client.py" --timers "$addr" "$pid" "$hs" "$idle" "$frame" || status=1
wait "$pid" 2>/dev/null || { echo "spec_client.sh: the server did not exit cleanly after SIGTERM" >&2; status=1; }
pid=
exec 3<&-

[ "$status" = 0 ] || { echo "spec_client.sh: FAILED (server log: see above)" >&2; tail -20 "$tmp/server.log" >&2; }
exit "$status"
