#!/usr/bin/env bash
# Test driver: starts layerserve on 127.0.0.1:0, runs a command with every
# @ADDRESS@ in its arguments replaced by the server's HOST:PORT, then stops
# the server with SIGTERM. Fails if the command fails or the server does not
# exit cleanly.
#
# usage: with_server.sh LAYERSERVE_BINARY COMMAND [ARGS...]
set -euo pipefail

server_bin="$1"
shift
workdir="$(mktemp -d -t layerserve-test.XXXXXX)"
mkfifo "$workdir/out"
"$server_bin" --address=127.0.0.1:0 >"$workdir/out" 2>"$workdir/log" &
server_pid=$!
exec 3<"$workdir/out"

cleanup() {
  if kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" || true; fi
  rm -rf "$workdir"
}
trap cleanup EXIT

address=""
while IFS= read -r -t 60 line <&3; do
  case "$line" in
    "listening on "*) address="${line#listening on }"; break ;;
  esac
done
if [ -z "$address" ]; then
  echo "with_server: layerserve printed no 'listening on' line; log:" >&2
  cat "$workdir/log" >&2
  exit 1
fi
cat <&3 >/dev/null &

args=()
for a in "$@"; do args+=("${a//@ADDRESS@/$address}"); done
status=0
"${args[@]}" || status=$?

kill -TERM "$server_pid"
server_status=0
wait "$server_pid" || server_status=$?
if [ "$server_status" -ne 0 ]; then
  echo "with_server: layerserve exited with $server_status after SIGTERM" >&2
  status=1
fi
exit "$status"
