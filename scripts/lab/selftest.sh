#!/usr/bin/env bash
# The lab's own check: it must report the command's exit status, and fail loudly (a
# `vfio-bridge: ... [CODE]` report, non-zero) when a module does not load, a device does not bind,
# the guest does not boot or the time runs out. Each of those boots a guest without node: about 5 s
# each. Then the command itself, as a user runs it, with a device set given on its command line:
# the addresses and groups it promised, and the NVMe example test on its nvme.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
failures=0

# check NAME WANT_RC PATTERN OUTPUT RC: one of OUTPUT's last lines must match PATTERN.
check() {
  local name=$1 want_rc=$2 pattern=$3 out=$4 rc=$5 tail
  tail=$(printf '%s\n' "$out" | tail -n 4)
  if { { [ "$want_rc" = nonzero ] && [ "$rc" != 0 ]; } || [ "$rc" = "$want_rc" ]; } &&
    printf '%s\n' "$tail" | grep -q -- "$pattern"; then
    echo "lab selftest: ok   $name (exit $rc: $(printf '%s\n' "$tail" | grep -m1 -- "$pattern"))"
    return
  fi
  echo "lab selftest: FAIL $name: exit $rc, wanted $want_rc and one of the last lines matching '$pattern'; output:"
  printf '%s\n' "$out" | tail -n 15 | sed 's/^/    /'
  failures=$((failures + 1))
}

# expect NAME WANT_RC PATTERN [ENV=VALUE...] -- LAB_ARGS...
expect() {
  local name=$1 want_rc=$2 pattern=$3
  shift 3
  local envs=()
  while [ "$1" != -- ]; do
    envs+=("$1")
    shift
  done
  shift
  local out rc
  out=$(env "${envs[@]}" "$here/lab.sh" "$@" 2>&1)
  rc=$?
  check "$name" "$want_rc" "$pattern" "$out" "$rc"
}

expect 'exit status comes back' 7 '^lab: command exited 7$' -- sh -c 'test -c /dev/vfio/vfio && exit 7'
expect 'a module that does not load' 1 '^vfio-bridge: module vfio-pci did not load.*\[ELABGUEST\]' \
  VFIO_BRIDGE_LAB_APPEND=lab_modules=vfio-pci -- true
expect 'a device that does not bind (no IOMMU)' 1 '^vfio-bridge: device edu .* did not bind to vfio-pci' \
  VFIO_BRIDGE_LAB_APPEND=intel_iommu=off -- true
expect 'a guest that does not boot' 1 '^vfio-bridge: the guest did not boot.*\[ELABBOOT\]' \
  VFIO_BRIDGE_LAB_APPEND=rdinit=/nonexistent -- true
expect 'a command that outlives the timeout' 124 '^vfio-bridge: timed out after 12s .*\[ETIMEDOUT\]' -- --timeout 12 sleep 600

if [ ! -f "$repo/dist/index.js" ]; then
  echo "lab selftest: skip the cases that need dist/: it is not built (npm run build)"
else
  # The backing file QEMU maps as ivshmem's BAR2 holds, on the host, what the guest wrote.
  shm=$(mktemp)
  write_js="const { Group, Container } = require('./dist');
const bdf = process.env.VFIO_BRIDGE_HIL_DEVICES.match(/ivshmem=([^,]+)/)[1];
const c = Container.open(), g = Group.openByBdf(bdf); g.setContainer(c); c.setIommu();
const d = g.openDevice(bdf), m = d.map(2, 0, 4096);
m.write32(0x101, 0x6f696676); m.write16(0x105, 0x622d); m.close(); d.close(); g.close(); c.close();"
  out=$(VFIO_BRIDGE_LAB_IVSHMEM=$shm "$here/lab.sh" node -e "$write_js" 2>&1)
  seen=$(dd if="$shm" bs=1 skip=257 count=6 2>/dev/null)
  if [ "$seen" = 'vfio-b' ]; then
    echo "lab selftest: ok   guest writes through ivshmem's BAR2 reach the host file ('$seen')"
  else
    echo "lab selftest: FAIL host file holds '$seen' after the guest wrote 'vfio-b'; output:"
    printf '%s\n' "$out" | tail -n 15 | sed 's/^/    /'
    failures=$((failures + 1))
  fi
  rm -f "$shm"

  # The command as a user runs it, with devices of its own: a root port for each of two devices
  # (buses 01 and 02), two functions sharing a slot and so an IOMMU group, a device left on its
  # kernel driver, and an nvme on a new 64 KiB file, on which the NVMe example test then runs.
  want=nvme=0000:00:03.0,edu=0000:01:00.0,rtl8139=0000:02:00.0,edu2=0000:00:06.0,edu3=0000:00:06.1
  topology='set -e
test "$VFIO_BRIDGE_HIL_DEVICES" = '"$want"'
test "$VFIO_BRIDGE_HIL_KERNEL_DEVICES" = e1000=0000:00:07.0
test "$(stat -c %s "$VFIO_BRIDGE_HIL_NVME_FILE")" = 65536
group() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
test "$(group 0000:00:06.0)" = "$(group 0000:00:06.1)"
test "$(basename "$(readlink /sys/bus/pci/devices/0000:00:07.0/driver)")" = e1000
echo "lab selftest: topology as promised"
exec node node_modules/.bin/jest --selectProjects hil --runInBand --ci --cacheDirectory=/tmp/jest-cache test/hil/nvme.test.ts'
  out=$(cd "$repo" && node dist/cli/main.js lab --device nvme,size=64K --device edu,port --device rtl8139,port \
    --device edu,group=g --device edu,group=g --device e1000,driver=e1000 -- sh -c "$topology" 2>&1)
  rc=$?
  check 'a device set on the command line, and the NVMe example on it' 0 '^lab: command exited 0$' "$out" "$rc"
fi

if [ "$failures" -ne 0 ]; then
  echo "lab: FAIL the lab's self-test found $failures problem(s)"
  exit 1
fi
echo "lab selftest: all cases behave"
