#!/bin/busybox sh
# vfio-bridge lab: PID 1 of the guest (busybox sh, packed into the initramfs by `vfio-bridge lab`,
# lib/cli/lab/provision.ts).
#
# It loads the modules /modules.list names, mounts the host root read-only and the run directory
# writable, binds the lab devices to vfio-pci, runs the host's command chrooted into the host root,
# and writes the exit status to the run directory. Every step that can fail prints one `lab: FAIL ...` line, which
# the host reports verbatim; the host only trusts an exit status found in the `rc` file.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

halt_guest() {
  sync
  poweroff -f
  # Only reached when ACPI power-off is missing; init exiting panics, and panic=-1 with
  # QEMU's -no-reboot ends the guest as well.
  exit 1
}

fail() {
  echo "lab: FAIL $*"
  if grep -q " /lab 9p " /proc/mounts 2>/dev/null; then
    echo "$*" >/lab/failed
  fi
  halt_guest
}

mkdir -p /proc /sys /dev /newroot /lab
mount -t proc proc /proc || fail "mounting /proc"
mount -t sysfs sysfs /sys || fail "mounting /sys"
mount -t devtmpfs devtmpfs /dev || fail "mounting /dev"
echo "lab: guest kernel $(uname -r) up"

# KVM takes the TSC rate it gives its guests when it loads. The kernel's first TSC calibration is
# refined about a second into the boot (clocksource tsc-early becomes tsc); under TCG the two can
# differ by hundreds of ppm, and a KVM loaded in between gives its guests a rate and a kvm-clock
# scale that do not match their TSC (the kernel warns "user requested TSC rate below hardware
# speed", or silently catches the TSC up): nested guests then stalled at their first halt. So the
# modules wait for the refined rate (at most 5 s; a TSC the kernel distrusts never gets one).
cs=/sys/devices/system/clocksource/clocksource0/current_clocksource
t=0
while [ "$(cat "$cs" 2>/dev/null)" = tsc-early ] && [ "$t" -lt 50 ]; do
  sleep 0.1
  t=$((t + 1))
done

# lab_modules (comma-separated, from the kernel command line) replaces the list, so the lab's
# self-test can prove that a module failing to load stops the run.
modules=$(cat /modules.list)
[ -z "${lab_modules:-}" ] || modules=$(echo "$lab_modules" | tr , ' ')
for m in $modules; do
  out=$(insmod "/modules/$m.ko" 2>&1) || fail "module $m did not load: ${out:-insmod failed}"
done

# The host root does not change while the guest runs, so the guest may cache it (cache=loose makes
# node and jest start several times faster). The run directory, which holds ivshmem's backing
# file, keeps 9p's default cache=none and is bound over its own host path below, so reading that
# file through its host path always asks the host.
opts=trans=virtio,version=9p2000.L,msize=524288
mount -t 9p -o "$opts,ro,cache=loose" host /newroot || fail "mounting the host root over 9p (mount_tag host)"
mount -t 9p -o "$opts,rw" lab /lab || fail "mounting the run directory over 9p (mount_tag lab)"
[ -r /lab/env ] || fail "the run directory has no env file"
# shellcheck disable=SC1091
. /lab/env

# Whether the device at $bdf is $ids (vendor:device, or * for any); fails naming $1 otherwise.
check_ids() {
  dev=/sys/bus/pci/devices/$bdf
  [ -d "$dev" ] || fail "device $1: no PCI device at $bdf"
  seen="$(cat "$dev/vendor"):$(cat "$dev/device")"
  want="0x${ids%:*}:0x${ids#*:}"
  [ "$ids" = '*' ] || [ "$seen" = "$want" ] || fail "device $1 at $bdf is $seen, expected $want"
}

# LAB_DEVICES is "role=vendor:device@bdf ..." (vendor:device may be *), from the lab's plan.
for spec in $LAB_DEVICES; do
  role=${spec%%=*}
  rest=${spec#*=}
  ids=${rest%@*}
  bdf=${rest#*@}
  check_ids "$role"
  echo vfio-pci >"$dev/driver_override" || fail "device $role $bdf: writing driver_override"
  if [ -e "$dev/driver" ]; then
    echo "$bdf" >"$dev/driver/unbind" || fail "device $role $bdf: unbinding its driver"
  fi
  echo "$bdf" >/sys/bus/pci/drivers_probe
  drv=$(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null)
  [ "$drv" = vfio-pci ] || fail "device $role $bdf did not bind to vfio-pci (driver: ${drv:-none})"
  group=$(basename "$(readlink "$dev/iommu_group")")
  [ -c "/dev/vfio/$group" ] || fail "device $role $bdf: /dev/vfio/$group did not appear"
  echo "lab: $role $bdf bound to vfio-pci, IOMMU group $group"
done

# LAB_KERNEL_DEVICES is "driver=vendor:device@bdf ...": devices left on a real kernel driver, which
# probed them when its module was loaded above.
for spec in ${LAB_KERNEL_DEVICES:-}; do
  want_drv=${spec%%=*}
  rest=${spec#*=}
  ids=${rest%@*}
  bdf=${rest#*@}
  check_ids "$want_drv"
  drv=$(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null)
  [ "$drv" = "$want_drv" ] || fail "device $bdf is not on its kernel driver $want_drv (driver: ${drv:-none})"
  echo "lab: $bdf on its kernel driver $want_drv"
done

mount --bind /dev /newroot/dev || fail "binding /dev into the host root"
mount --bind /proc /newroot/proc || fail "binding /proc into the host root"
mount --bind /sys /newroot/sys || fail "binding /sys into the host root"
# The guest gets a writable /tmp of its own. Host paths under /tmp that the command needs (a
# project checked out there, as CI clones often are, or a disk image) would vanish beneath it:
# LAB_KEEP lists them, one a line, and each is bound aside first and moved back after.
keep() {
  i=0
  while IFS= read -r p; do
    [ -n "$p" ] || continue
    i=$((i + 1))
    if [ "$1" = aside ]; then
      [ -e "/newroot$p" ] || continue
      mkdir -p /keep
      if [ -d "/newroot$p" ]; then mkdir "/keep/$i"; else : >"/keep/$i"; fi
      mount --bind "/newroot$p" "/keep/$i" || fail "binding $p aside"
    else
      [ -e "/keep/$i" ] || continue
      if [ ! -e "/newroot$p" ]; then
        if [ -d "/keep/$i" ]; then mkdir -p "/newroot$p"; else mkdir -p "$(dirname "/newroot$p")" && : >"/newroot$p"; fi
      fi
      mount --move "/keep/$i" "/newroot$p" || fail "putting $p back in the guest's /tmp"
    fi
  done <<EOF
${LAB_KEEP:-}
EOF
}
keep aside
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "mounting a tmpfs on /tmp"
keep back
mkdir -p "/newroot$LAB_RUN_DIR" 2>/dev/null
mount --bind /lab "/newroot$LAB_RUN_DIR" || fail "binding the run directory over $LAB_RUN_DIR"
cp /lab/cmd.sh /newroot/tmp/.lab-cmd.sh || fail "copying the command into the guest"

# A command still running when the host's timeout kills the guest leaves no trace of where it hung:
# shortly before (the host counts from QEMU's start), say where every task waits.
if [ -n "${LAB_TIMEOUT:-}" ] && [ "$LAB_TIMEOUT" -gt 60 ]; then
  (
    sleep $((LAB_TIMEOUT - 30))
    echo "lab: the command is still running near the timeout; where each task waits:"
    for t in /proc/[0-9]*/task/[0-9]*; do
      echo "lab: task ${t#/proc/} $(cat "$t/comm" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)"
      sed 's/^/lab:   /' "$t/stack" 2>/dev/null
    done
  ) &
fi

echo "lab: ready"
chroot /newroot /bin/bash /tmp/.lab-cmd.sh
rc=$?
echo "$rc" >/lab/rc.tmp && mv /lab/rc.tmp /lab/rc || fail "writing the exit status to the run directory"
echo "lab: command exited $rc"
halt_guest
