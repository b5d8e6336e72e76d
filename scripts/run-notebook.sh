#!/usr/bin/env bash
# The project's main job, from a fresh Debian 12 machine: install the
# packages, build, start layerserve in the background on a free port, replay
# the seed notebook against it with `layerctl notebook`, stop the server,
# and exit with the notebook's status (0 when every cell passes).
#
# usage: scripts/run-notebook.sh [extra layerctl notebook flags...]
# LAYERSERVE_BUILD_DIR overrides the build directory (default: build).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bash scripts/install-deps.sh
build="${LAYERSERVE_BUILD_DIR:-build}"
bash scripts/build.sh "$build" layerserve layerctl

log="$(mktemp -t layerserve-log.XXXXXX)"
fifo="$(mktemp -u -t layerserve-out.XXXXXX)"
mkfifo "$fifo"
"$build/server/layerserve" --address=127.0.0.1:0 >"$fifo" 2>"$log" &
server_pid=$!
exec 3<"$fifo"
rm -f "$fifo"

stop_server() {
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap stop_server EXIT

# The server prints `listening on HOST:PORT` once it has bound the port.
address=""
while IFS= read -r -t 60 line <&3; do
  case "$line" in
    "listening on "*) address="${line#listening on }"; break ;;
  esac
done
if [ -z "$address" ]; then
  echo "run-notebook: layerserve did not report its address; its log:" >&2
  cat "$log" >&2
  exit 1
fi
# Keep draining the server's stdout so it never blocks on a full pipe.
cat <&3 >/dev/null &

status=0
"$build/client/layerctl" notebook --server "$address" "$@" || status=$?

stop_server
trap - EXIT
if [ "$status" -ne 0 ]; then
  echo "run-notebook: layerctl notebook exited with $status; server log tail:" >&2
  tail -n 20 "$log" >&2
fi
rm -f "$log"
exit "$status"
