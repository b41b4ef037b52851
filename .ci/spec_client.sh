#!/usr/bin/env bash
# Conformance of an already-built chat-server against chat-proto/PROTOCOL.md, through
# .ci/spec_client.py (a client written from the document alone). Builds nothing.
#   .ci/spec_client.sh target/debug/chat-server
# Four runs, each against a fresh server: the main checks (default settings, but no cap on
# connections per IP and no limit on login attempts or registrations per IP: every client comes
# from 127.0.0.1; the per-account limit stays); a server taking no guests, with low limits on
# login attempts and registrations per IP (the one place those are tested); rounds of
# 481 clients named at once, each of which must learn every other (frames read together
# with a Roster are still parsed); flood control, a room limit, retention, the timers and the
# shutdown, against a server with short timers, --room-members 2 and --history-size 5 (the script
# ends it with SIGTERM).
# Exit status: 0 if all four pass, 1 otherwise. About 40 s.
set -u
bin=${1:?usage: $0 path/to/chat-server}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
pid=
runs=0
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# start ARGS...: the server on a free loopback port; sets pid and addr.
start() {
  runs=$((runs + 1))
  mkfifo "$tmp/out.$runs"
  # Each server keeps its history in a directory of its own.
  "$bin" --bind 127.0.0.1:0 --data "$tmp/data.$RANDOM$RANDOM" "$@" >"$tmp/out.$runs" 2>>"$tmp/server.log" &
  pid=$!
  exec 3<"$tmp/out.$runs"
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

# stop: end the server we started and wait for it (its stdout pipe stays open until then).
stop() {
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  pid=
  exec 3<&-
}

# The first two runs connect 481 clients at once, all from 127.0.0.1: no cap per IP.
status=0
start --max-per-ip 0 --login-rate-ip 0 --register-rate 0
timeout 70 python3 "$here/spec_client.py" "$addr" || status=1
stop

ip_limit=5 reg_limit=3
start --no-guests --login-rate-ip "$ip_limit" --register-rate "$reg_limit"
timeout 30 python3 "$here/spec_client.py" --no-guests "$addr" "$ip_limit" "$reg_limit" || status=1
stop

start --max-per-ip 0
timeout 70 python3 "$here/spec_client.py" --presence-race "$addr" || status=1
stop

hs=1 idle=2 frame=1 members=2
start --handshake-timeout "${hs}s" --idle-timeout "${idle}s" --frame-timeout "${frame}s" --room-members "$members" \
  --history-size 5
timeout 70 python3 "$here/spec_client.py" --timers "$addr" "$pid" "$hs" "$idle" "$frame" "$members" || status=1
# The script has sent SIGTERM (unless it failed first): the server must exit 0 within its
# grace. Its stdout reaching end of file says it has exited; 20 s bound that wait.
kill "$pid" 2>/dev/null
while read -t 20 -r _ <&3; do :; done
if [ $? -gt 128 ]; then
  echo "spec_client.sh: the server did not exit within 20 s of SIGTERM" >&2
  kill -KILL "$pid" 2>/dev/null
  status=1
fi
wait "$pid" 2>/dev/null || { echo "spec_client.sh: the server did not exit cleanly after SIGTERM" >&2; status=1; }
pid=
exec 3<&-

[ "$status" = 0 ] || { echo "spec_client.sh: FAILED; the server log ends:" >&2; tail -20 "$tmp/server.log" >&2; }
exit "$status"
