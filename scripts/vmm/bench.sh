#!/usr/bin/env bash
# npm run bench:vmm: in one lab guest, boots the VMM guest (scripts/vmm/guest-init.sh) with the
# lab's e1000e and rtl8139 passed through, first under QEMU's vfio-pci (qemu-baseline.sh), then
# under the Node VMM (node-vmm.ts, PcMachine), and prints them side by side (bench-report.ts): time
# to init, to both drivers bound and to the first answered ping, ping p50/p99 per interface, and
# exits per ping, each Node figure as a ratio to QEMU's from the same run. One run, not a timed test.
#
#   scripts/vmm/bench.sh [--pings N] [--rtl 8139cp|8139too]     (default 200 pings, 8139cp)
#
# The Node VMM's guest RAM is on 2 MiB huge pages (the pool is set in the lab guest first); QEMU
# keeps its default anonymous memory, which transparent huge pages may back (the report says how
# the lab kernel sets them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pings=200
rtl=8139cp
mem=256
parse() {
  while [ $# -gt 0 ]; do
    case $1 in
      --pings) pings=$2; shift 2 ;;
      --rtl) rtl=$2; shift 2 ;;
      --kernel) kernel=$2; shift 2 ;;
      --initrd) initrd=$2; shift 2 ;;
      *) echo "bench: FAIL unknown argument $1" >&2; exit 2 ;;
    esac
  done
  [[ $pings =~ ^[1-9][0-9]*$ ]] || { echo "bench: FAIL --pings $pings is not a positive count" >&2; exit 2; }
  case $rtl in 8139cp | 8139too) ;; *) echo "bench: FAIL --rtl $rtl is not 8139cp or 8139too" >&2; exit 2 ;; esac
}

# Inside the lab guest: both sides one after the other, then the report.
in_lab() {
  local kernel= initrd=
  parse "$@"
  cd "$here/../.."
  # Both sides read the same files over the lab's caching 9p mount: read them once first, so neither
  # pays for the first read.
  cat "$kernel" "$initrd" >/dev/null
  bash "$here/qemu-baseline.sh" --kernel "$kernel" --initrd "$initrd" --pings "$pings" --rtl "$rtl" \
    --mem "$mem" --record /tmp/bench-vmm.qemu --brief || echo "bench: the QEMU side exited $?"
  # 256 MiB of guest RAM is 128 huge pages; a few more for the pool's own slack.
  echo $((mem / 2 + 12)) >/proc/sys/vm/nr_hugepages
  node -r @swc-node/register "$here/node-vmm.ts" --kernel "$kernel" --initrd "$initrd" --pings "$pings" \
    --rtl "$rtl" --mem "$mem" --hugepages yes --timeout 300 --record /tmp/bench-vmm.node --brief ||
    echo "bench: the Node VMM side exited $?"
  node -r @swc-node/register "$here/bench-report.ts" --pings "$pings" /tmp/bench-vmm.qemu /tmp/bench-vmm.node
}

if [ "${1:-}" = --in-lab ]; then
  shift
  in_lab "$@"
  exit
fi

parse "$@"
# shellcheck source=../lab/provision.sh
. "$here/../lab/provision.sh"
# shellcheck source=guest.sh
. "$here/guest.sh"
lab_provision
vmm_guest_provision
exec "$here/../lab/lab.sh" --timeout "${VFIO_BRIDGE_LAB_TIMEOUT:-900}" \
  bash "$here/bench.sh" --in-lab --kernel "$VMM_GUEST_KERNEL" --initrd "$VMM_GUEST_INITRAMFS" \
  --pings "$pings" --rtl "$rtl"
