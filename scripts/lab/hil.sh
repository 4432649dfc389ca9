#!/usr/bin/env bash
# Runs the hardware-in-the-loop jest project (test/hil) inside the lab guest. Extra arguments go
# to jest, e.g. `scripts/lab/hil.sh test/hil/edu-widths.test.ts -t width`. Build first (npm run build):
# the guest sees the repository read-only and cannot compile the addon or dist/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
if ! compgen -G 'build/Release/*.node' >/dev/null && ! compgen -G 'prebuilds/linux-x64/*.node' >/dev/null; then
  echo "lab: FAIL the native addon is not built; run: npm run build" >&2
  exit 1
fi
[ -f dist/index.js ] || { echo "lab: FAIL dist/ is not built; run: npm run build" >&2; exit 1; }
# A guest that stopped running (exit 75: QEMU idle, no timer firing in the guest, or its CPU stuck at
# one instruction never taking a waiting interrupt; the lab prints the monitor's picture of its
# CPUs) decided nothing about the tests: the suite runs once more, and says so.
for attempt in 1 2; do
  status=0
  # hil-run.sh runs jest with a watch from outside its process (a blocked event loop is shown).
  "$here/lab.sh" bash "$here/hil-run.sh" "$@" || status=$?
  [ "$status" = 75 ] && [ "$attempt" = 1 ] || exit "$status"
  echo "lab: the lab guest stopped running (not a test failure; its picture is above): running the suite once more" >&2
done
