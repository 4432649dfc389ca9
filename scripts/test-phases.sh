# Sourced by scripts/test.sh: the phases of `npm test` and their wall times, and one job that runs
# in the background beside them (the lab's provisioning, whose kernel build is the longest phase on
# a fresh machine).
#
#   phase NAME             ends the phase before, starts NAME (prints `=== NAME (N s in) ===`)
#   background_start NAME CMD...
#                          starts CMD in a session of its own at nice 10, its output to a file
#                          (one job at a time)
#   background_follow PATTERN
#                          shows the job's output lines matching PATTERN (all of them, from the
#                          start, then as they come) until it ends, and returns its status
#   background_output      the job's whole output, once it has ended (for a failure's report)
#   phases_summary         each phase's wall time, the job's (from when it started to when it ended),
#                          the total; run by the EXIT trap below, with a failing exit's status
#
# At exit the job is stopped (its whole process group) if it still runs: a failed phase does not
# leave a kernel build behind. The job's nice 10 gives the phases beside it the CPU first; it takes
# what they leave, and the machine stays busy.
# shellcheck shell=bash

phases_t0=$EPOCHREALTIME
phase_names=()
phase_starts=()
bg_name=
bg_pid=
bg_log=
bg_t0=
bg_t1=

phases_secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

phase() {
  phase_names+=("$1")
  phase_starts+=("$EPOCHREALTIME")
  printf '\n=== %s (%s s in) ===\n' "$1" "$(phases_secs "$phases_t0" "$EPOCHREALTIME")"
}

background_start() {
  bg_name=$1
  shift
  bg_log=$(mktemp "${TMPDIR:-/tmp}/vfio-bridge-background.XXXXXX")
  bg_t0=$EPOCHREALTIME
  # setsid: a process group of its own, so that one kill stops the job and all it started, and a
  # Ctrl-C at the terminal reaches it only through the EXIT trap. The job writes when it ended.
  setsid nice -n 10 bash -c '"$@"; rc=$?; echo "$EPOCHREALTIME" >"$0.end"; exit "$rc"' \
    "$bg_log" "$@" >"$bg_log" 2>&1 </dev/null &
  bg_pid=$!
  printf '=== %s: in the background from here (log %s) ===\n' "$bg_name" "$bg_log"
}

background_follow() {
  local pattern=$1 status=0
  [ -n "$bg_pid" ] || return 1
  tail --pid="$bg_pid" -s 0.2 -n +1 -f "$bg_log" | grep --line-buffered -e "$pattern" >&2 || true
  wait "$bg_pid" || status=$?
  bg_t1=$(cat "$bg_log.end" 2>/dev/null || echo "$EPOCHREALTIME")
  bg_pid=
  return "$status"
}

# The job's whole output (for a failure's report), once it has ended.
background_output() { cat "$bg_log"; }

phases_summary() {
  local rc=$? t1=$EPOCHREALTIME i n=${#phase_names[@]} note=
  if [ -n "$bg_pid" ]; then
    kill -TERM -- "-$bg_pid" 2>/dev/null || kill -TERM "$bg_pid" 2>/dev/null || true
    wait "$bg_pid" 2>/dev/null || true
    bg_t1=$t1
    note=' (stopped: npm test ended first)'
  fi
  [ -z "$bg_log" ] || rm -f "$bg_log" "$bg_log.end"
  [ "$rc" = 0 ] || printf '\n!!! npm test failed (exit %s) in: %s !!!\n' "$rc" "${phase_names[n - 1]:-start}"
  printf '\n=== wall time per phase ===\n'
  for ((i = 0; i < n; i++)); do
    printf '%6s s  %s\n' "$(phases_secs "${phase_starts[i]}" "${phase_starts[i + 1]:-$t1}")" "${phase_names[i]}"
  done
  if [ -n "$bg_t0" ]; then
    printf '%6s s  %s, in the background from %s s in%s\n' "$(phases_secs "$bg_t0" "${bg_t1:-$t1}")" \
      "$bg_name" "$(phases_secs "$phases_t0" "$bg_t0")" "$note"
  fi
  printf '%6s s  total\n' "$(phases_secs "$phases_t0" "$t1")"
  exit "$rc"
}
trap phases_summary EXIT
