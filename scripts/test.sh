#!/usr/bin/env bash
# `npm test`: install, build, the packed tarball (here, then on an old glibc), then the unit, native
# and lab suites, in that order; at the end, each phase's wall time (scripts/test-phases.sh).
#
# The old-glibc check (scripts/compat/old-glibc.sh: a debootstrapped Debian) needs root and, the first
# time, Debian's archive; outside CI it skips loudly when it cannot have them, with CI=true it fails.
#
# The lab suite (test/hil on real vfio-pci in a QEMU guest: `vfio-bridge lab` with the project's
# device set, through scripts/lab/) needs root and apt the first time. It boots the lab's own
# kernel (scripts/lab/kernel/lab.config on Debian's linux-source-6.12), which the provisioning
# phase builds once, about 15 minutes on 2 CPUs, and then takes from the cache. Outside CI, when the
# lab cannot be provisioned, one loud line says how to fix that and only the lab suite is skipped.
# With CI=true the lab is mandatory.
#
# On a fresh machine that kernel build is the longest phase, and it only needs the build's dist/:
# so the provisioning starts in the background once the build is done, at nice 10, and the packed
# tarball, the old-glibc test (mostly network and disk: debootstrap) and the unit and native suites
# run meanwhile, taking the CPU first when they want it. The lab phase then waits for what is left
# of it. With the kernel cached, provisioning takes seconds and nothing changes.
# VFIO_BRIDGE_TEST_SERIAL=1 runs the provisioning in its own phase after the suites instead (as
# before, to compare the two, or to rule the overlap out when a suite's timing looks off).
set -euo pipefail
cd "$(dirname "$0")/.."

ci=false
case ${CI:-} in true | 1) ci=true ;; esac
serial=false
case ${VFIO_BRIDGE_TEST_SERIAL:-} in true | 1) serial=true ;; esac
provision() {
  background_start "lab: provision (QEMU, busybox, the lab's kernel: built once, then cached)" \
    bash scripts/lab/lab.sh --provision
}
# shellcheck source=scripts/test-phases.sh
. scripts/test-phases.sh

phase 'npm install'
# `npm install`, not `npm ci`: the registry this project installs from serves only the running
# platform's optional binaries (@swc/core-*, @unrs/*), so the lock file never lists the others and
# `npm ci` rejects it as out of sync. `npm install` still installs the locked versions.
npm install --no-audit --no-fund

phase 'build (addon + TypeScript)'
npm run build

# The old-glibc test's host package first: the provisioning may run apt itself, and two apt-gets
# at once wait on (or fail at) dpkg's lock.
bash scripts/compat/old-glibc.sh --host-tools
$serial || provision

# Before the suites: packing leaves the prebuild (from this build) that test/native checks.
phase 'packed tarball'
bash scripts/pack-test.sh

phase 'packed tarball on an old glibc'
bash scripts/compat/old-glibc.sh

for project in unit native; do
  phase "$project suite"
  npx jest --selectProjects "$project" --maxWorkers=1
done

phase 'lab: provision (waiting for the background job to end)'
! $serial || provision
# The lab's progress lines (`lab: ...`, a kernel build's among them) show from the start, then as
# they come; the rest (a failure's report) after, unless the lab is skipped for a reason that fits
# on one line.
status=0
background_follow '^lab: ' || status=$?
why=$(background_output | grep -A1 '^vfio-bridge: cannot provision the lab: ' | tr -s '\n ' ' ' | sed 's/ $//' || true)
if [ "$status" = 3 ] && [ "$ci" = false ]; then
  echo "!!! SKIPPING the lab suite (test/hil): ${why#vfio-bridge: } (with CI=true this fails) !!!"
  exit 0
fi
background_output | grep -v '^lab: ' >&2 || true
[ "$status" = 0 ] || exit "$status"

phase 'lab: self-test'
bash scripts/lab/selftest.sh

phase 'lab: hardware-in-the-loop suite'
# The whole suite (both IOMMU backends, mdev and migration, the VMM boots) outgrew the lab's default
# 600 s: give it 25 minutes.
VFIO_BRIDGE_LAB_TIMEOUT=${VFIO_BRIDGE_LAB_TIMEOUT:-1500} bash scripts/lab/hil.sh
