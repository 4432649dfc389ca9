#!/usr/bin/env bash
# Inside the lab guest: the hil jest project, with a watch on the jest process from outside it.
# test/hil/jest-setup.ts touches a heartbeat file every 2 s from jest's event loop. If it goes
# stale for 90 s, the loop is blocked (no jest timeout can fire then) and the lab would only time
# out with nothing said: this prints every thread of every node process (state, wait channel,
# kernel stack), and, where the kernel has sysrq, its blocked tasks and CPU backtraces (w, l), once
# every 2 minutes while it lasts. It runs as a process of its own: a thread of the stuck process,
# such as test/hil/loop-watchdog.ts's, could be stuck with it (a lock of the process's memory map).
# Usage (hil.sh runs it): hil-run.sh [JEST ARGS...]
set -uo pipefail
beat=/tmp/vfio-bridge-hil.beat
rm -f "$beat"
export VFIO_BRIDGE_HIL_BEAT=$beat

threads() {
  local p t stat
  for p in $(pgrep -x node); do
    for t in /proc/"$p"/task/*; do
      stat=$(cat "$t/stat" 2>/dev/null) || continue
      stat=${stat##*) }
      echo "  $p/${t##*/} $(cat "$t/comm" 2>/dev/null) state ${stat%% *} wchan $(cat "$t/wchan" 2>/dev/null)"
      head -n 12 "$t/stack" 2>/dev/null | sed 's/^/      /'
    done
  done
}

watch() {
  local now age told=0
  while sleep "${VFIO_BRIDGE_HIL_WATCH_EVERY:-15}"; do
    [ -f "$beat" ] || continue
    now=$(date +%s)
    age=$((now - $(stat -c %Y "$beat")))
    [ "$age" -ge "${VFIO_BRIDGE_HIL_WATCH_STALE:-90}" ] && [ $((now - told)) -ge 120 ] || continue
    told=$now
    {
      echo "hil-watch: jest's event loop has not run for ${age} s; the node processes' threads:"
      threads
      echo 'hil-watch: blocked tasks and CPU backtraces (sysrq w, l):'
      { echo w >/proc/sysrq-trigger; } 2>/dev/null
      { echo l >/proc/sysrq-trigger; } 2>/dev/null
      sleep 2
      dmesg | tail -n 150
    } >&2
  done
}

watch &
watcher=$!
status=0
node node_modules/.bin/jest --selectProjects hil --runInBand --ci --cacheDirectory=/tmp/jest-cache "$@" || status=$?
kill "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null
exit "$status"
