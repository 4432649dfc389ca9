#!/usr/bin/env bash
# npm run bench:vmm: boots the VMM guest (scripts/vmm/guest-init.sh) with the lab's e1000e and
# rtl8139 passed through, inside the lab, and prints time to both drivers bound, ping p50/p99
# through e1000e and KVM exits per ping. One run, not a timed test.
#
#   scripts/vmm/bench.sh [--pings N]     (default 200)
#
# Today this is the QEMU side (scripts/vmm/qemu-baseline.sh); the Node VMM runs beside it in the
# same lab guest once it exists, and the ratios are taken there.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lab/provision.sh
. "$here/../lab/provision.sh"
# shellcheck source=guest.sh
. "$here/guest.sh"
lab_provision
vmm_guest_provision
exec "$here/../lab/lab.sh" --timeout "${VFIO_BRIDGE_LAB_TIMEOUT:-900}" \
  bash "$here/qemu-baseline.sh" --kernel "$VMM_GUEST_KERNEL" --initrd "$VMM_GUEST_INITRAMFS" "$@"
