#!/usr/bin/env bash
# npm run bench:vmm: in one lab guest, boots the VMM guest (scripts/vmm/guest-init.sh) with the
# lab's e1000e and rtl8139 passed through, first under QEMU's vfio-pci (qemu-baseline.sh), then
# under the Node VMM (node-vmm.ts, PcMachine), and prints them side by side (bench-report.ts): time
# to init, to both drivers bound and to the first answered ping, ping p50/p99 per interface, and
# exits per ping, each Node figure as a ratio to QEMU's from the same run. One run, not a timed test.
#
#   scripts/vmm/bench.sh [--pings N] [--rtl 8139cp|8139too] [--cpus N]   (200 pings, 8139cp, 1)
#
# --cpus gives the lab guest N vCPUs: with 2, the VMM's vCPU thread and its event loop each have a
# CPU of their own, which is what the event-loop targets assume (with 1 they share it with TCG).
#
# The Node VMM's guest RAM is on 2 MiB huge pages (the pool is set in the lab guest first); QEMU
# keeps its default anonymous memory, which transparent huge pages may back (the report says how
# the lab kernel sets them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pings=200
rtl=8139cp
cpus=1
mem=256
parse() {
  while [ $# -gt 0 ]; do
    case $1 in
      --pings) pings=$2; shift 2 ;;
      --rtl) rtl=$2; shift 2 ;;
      --cpus) cpus=$2; shift 2 ;;
      *) echo "bench: FAIL unknown argument $1" >&2; exit 2 ;;
    esac
  done
  [[ $pings =~ ^[1-9][0-9]*$ ]] || { echo "bench: FAIL --pings $pings is not a positive count" >&2; exit 2; }
  case $rtl in 8139cp | 8139too) ;; *) echo "bench: FAIL --rtl $rtl is not 8139cp or 8139too" >&2; exit 2 ;; esac
}

# Inside the lab guest (lab.sh provisions the guest's kernel and initramfs and names them in
# VFIO_BRIDGE_VMM_KERNEL and VFIO_BRIDGE_VMM_INITRD): both sides one after the other, then the report.
in_lab() {
  local kernel=${VFIO_BRIDGE_VMM_KERNEL:?bench: run through scripts/lab/lab.sh} initrd=${VFIO_BRIDGE_VMM_INITRD:?}
  cd "$here/../.."
  # Both sides read the same files over the lab's caching 9p mount: read them once first, so neither
  # pays for the first read.
  cat "$kernel" "$initrd" >/dev/null
  echo "bench: the lab guest has $(nproc) CPU(s)"
  rm -f /tmp/bench-vmm.qemu /tmp/bench-vmm.node /tmp/bench-vmm.node.out /tmp/bench-vmm.*.loop
  # A VMM's process runs with V8 flags that keep work off its event loop (docs/vmm.md, "The event
  # loop and V8"): every function compiled when its module loads, not at its first call (under the
  # lab's TCG each first call held the loop for milliseconds, and PcMachine.open makes hundreds); the
  # old generation at 64 MiB from the start (its first filling, 10-16 MiB in, while the guest boots,
  # was a full mark-compact of 240 ms); no memory reducer (its full GCs, 40-120 ms each, came when
  # the guest stopped needing JavaScript). The idle baselines run with the same flags.
  local v8=(--no-lazy --initial-old-space-size=64 --no-memory-reducer)
  # The event loop's floor under this load: a Node process with nothing to do, beside QEMU's run of
  # the same guest (the lab's CPUs and the host's are shared with it as with the Node VMM's own
  # vCPU threads). Its figures are the baseline of the report's event-loop rows.
  node "${v8[@]}" build/vmm/node-vmm.js --idle 0 --label 'idle beside QEMU' \
    --loop-json /tmp/bench-vmm.idle.loop >/tmp/bench-vmm.idle.out 2>&1 &
  local idle=$!
  bash "$here/qemu-baseline.sh" --kernel "$kernel" --initrd "$initrd" --pings "$pings" --rtl "$rtl" \
    --mem "$mem" --record /tmp/bench-vmm.qemu --brief || echo "bench: the QEMU side exited $?"
  kill -TERM "$idle" 2>/dev/null || true
  wait "$idle" || echo "bench: the idle process beside QEMU exited $?"
  cat /tmp/bench-vmm.idle.out
  # What the lab allows an event loop with nothing else to do: the floor for the VMM's.
  node "${v8[@]}" build/vmm/node-vmm.js --idle 10 || echo "bench: the idle baseline exited $?"
  # The Node VMM's RAM in huge pages: 128 of 2 MiB for 256 MiB, and some slack.
  echo $((mem / 2 + 12)) >/proc/sys/vm/nr_hugepages
  # Its output goes to a file and is shown after it ends: written to the lab's serial console as it
  # came, each line held the loop being measured for milliseconds (a 300-byte report 26 ms), which
  # is the bench's console and not the VMM.
  node "${v8[@]}" build/vmm/node-vmm.js --kernel "$kernel" --initrd "$initrd" --pings "$pings" \
    --rtl "$rtl" --mem "$mem" --hugepages yes --timeout 300 --record /tmp/bench-vmm.node --brief \
    --loop-json /tmp/bench-vmm.node.loop >/tmp/bench-vmm.node.out 2>&1 || echo "bench: the Node VMM side exited $?"
  cat /tmp/bench-vmm.node.out
  node build/vmm/bench-report.js --pings "$pings" /tmp/bench-vmm.qemu /tmp/bench-vmm.node \
    --loops /tmp/bench-vmm.idle.loop /tmp/bench-vmm.node.loop
}

if [ "${1:-}" = --in-lab ]; then
  shift
  parse "$@"
  in_lab
  exit
fi

parse "$@"
# The Node VMM runs the compiled package (node-vmm.ts says why): it has to be built, and current.
cd "$here/../.."
if ! compgen -G 'build/Release/*.node' >/dev/null && ! compgen -G 'prebuilds/linux-x64/*.node' >/dev/null; then
  echo "bench: FAIL the native addon is not built; run: npm run build" >&2
  exit 1
fi
if [ ! -f dist/index.js ] || [ -n "$(find lib -name '*.ts' -newer dist/index.js -print -quit)" ]; then
  echo "bench: FAIL dist/ is missing or older than lib/; run: npm run build" >&2
  exit 1
fi
# The runners as JavaScript (scripts/vmm/tsconfig.json says why), to build/vmm.
(cd "$here/../.." && npm run --silent build:vmm)
exec "$here/../lab/lab.sh" --timeout "${VFIO_BRIDGE_LAB_TIMEOUT:-900}" --cpus "$cpus" \
  bash "$here/bench.sh" --in-lab --pings "$pings" --rtl "$rtl"
