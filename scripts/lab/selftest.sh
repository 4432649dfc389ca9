#!/usr/bin/env bash
# The lab's own check: it must report the command's exit status, and fail loudly (one
# `lab: FAIL ...` line, non-zero) when a module does not load, a device does not bind, the guest
# does not boot or the time runs out. Each case boots a guest without node: about 5 s each.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
failures=0

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
  local last
  last=$(printf '%s\n' "$out" | tail -n 1)
  if { [ "$want_rc" = nonzero ] && [ "$rc" != 0 ]; } || [ "$rc" = "$want_rc" ]; then
    if printf '%s\n' "$last" | grep -q -- "$pattern"; then
      echo "lab selftest: ok   $name (exit $rc: $last)"
      return
    fi
  fi
  echo "lab selftest: FAIL $name: exit $rc, wanted $want_rc and a last line matching '$pattern'; output:"
  printf '%s\n' "$out" | tail -n 15 | sed 's/^/    /'
  failures=$((failures + 1))
}

expect 'exit status comes back' 7 '^lab: command exited 7$' -- sh -c 'test -c /dev/vfio/vfio && exit 7'
expect 'a module that does not load' nonzero '^lab: FAIL module vfio-pci did not load' \
  VFIO_BRIDGE_LAB_APPEND=lab_modules=vfio-pci -- true
expect 'a device that does not bind (no IOMMU)' nonzero '^lab: FAIL device edu .* did not bind to vfio-pci' \
  VFIO_BRIDGE_LAB_APPEND=intel_iommu=off -- true
expect 'a guest that does not boot' nonzero '^lab: FAIL the guest did not boot' \
  VFIO_BRIDGE_LAB_APPEND=rdinit=/nonexistent -- true
expect 'a command that outlives the timeout' 124 '^lab: FAIL timed out after 12s' -- --timeout 12 sleep 600

# The backing file QEMU maps as ivshmem's BAR2 holds, on the host, what the guest wrote.
repo=$(cd "$here/../.." && pwd)
if [ -f "$repo/dist/index.js" ]; then
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
else
  echo "lab selftest: skip the ivshmem host-file case: dist/ is not built (npm run build)"
fi

if [ "$failures" -ne 0 ]; then
  echo "lab: FAIL the lab's self-test found $failures problem(s)"
  exit 1
fi
echo "lab selftest: all cases behave"
