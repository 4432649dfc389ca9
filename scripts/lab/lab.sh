#!/usr/bin/env bash
# vfio-bridge lab: real vfio-pci in a QEMU (TCG) guest.
#
#   scripts/lab/lab.sh                  boot and run the demo (npm run lab)
#   scripts/lab/lab.sh CMD [ARGS...]    boot and run CMD as root in this repository, inside the guest
#   scripts/lab/lab.sh --provision      only provision (exit 3: cannot, and the line says how to fix)
#
# Options (before CMD): --timeout SECONDS (default 600, or VFIO_BRIDGE_LAB_TIMEOUT).
# Environment: VFIO_BRIDGE_LAB_CACHE (cache directory), VFIO_BRIDGE_LAB_KERNEL (pin the kernel
# package), VFIO_BRIDGE_LAB_APPEND (extra kernel arguments, e.g. lab_modules=a,b for the self-test),
# VFIO_BRIDGE_LAB_IVSHMEM (where to keep a copy of ivshmem's backing file after the run),
# VFIO_BRIDGE_LAB_LOCK_WAIT (seconds to wait for another checkout's guest; default 1200).
# The exit status is CMD's; a lab failure prints one `lab: FAIL ...` line and exits non-zero
# (124 on timeout). See scripts/lab/README.md for the guest layout and the device list.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=provision.sh
. "$here/provision.sh"
# shellcheck source=../vmm/guest.sh
. "$here/../vmm/guest.sh"

# Fixed slots on the q35 root bus make the BDFs deterministic; the 9p exports sit far from them.
# role=vendor:device@bdf, and the QEMU device for it.
# `nonviable` is a second edu sharing slot 7 (and so its IOMMU group) with a virtio-9p function that
# stays on virtio-pci: a group vfio-pci can never hand out, for the viability tests.
# `hotreset` is an edu alone behind a pcie-root-port at 00:09.0, the one device the kernel can
# bus-reset (x-speed=5: at the default speed the link does not come back in time for the kernel).
LAB_DEVICES="edu=1234:11e8@0000:00:03.0 rtl8139=10ec:8139@0000:00:04.0 e1000e=8086:10d3@0000:00:05.0 ivshmem=1af4:1110@0000:00:06.0 nonviable=1234:11e8@0000:00:07.0 hotreset=1234:11e8@0000:01:00.0"
# Devices that stay on a real kernel driver, role=vendor:device@bdf where the role names the driver:
# the CLI moves them to vfio-pci and back. Tests see them as VFIO_BRIDGE_HIL_KERNEL_DEVICES.
LAB_KERNEL_DEVICES="e1000=8086:100e@0000:00:08.0"
LAB_IVSHMEM_SIZE=$((1024 * 1024))

timeout_s=${VFIO_BRIDGE_LAB_TIMEOUT:-600}
provision_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --timeout)
      timeout_s=${2:?--timeout needs seconds}
      shift 2
      ;;
    --provision)
      provision_only=1
      shift
      ;;
    --)
      shift
      break
      ;;
    -h | --help)
      sed -n '2,11s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ] || { [ $# -eq 1 ] && [ "$1" = demo ]; }; then
  # The demo is `npm run lab` on a fresh checkout too: install and build first when needed (the
  # guest sees the repository read-only and cannot do either).
  (
    cd "$repo"
    [ -d node_modules/node-addon-api ] || npm install --no-audit --no-fund
    if ! compgen -G 'build/Release/*.node' >/dev/null || [ ! -f dist/index.js ] ||
      [ -n "$(find lib native -newer dist/index.js -type f -print -quit)" ]; then
      npm run build
    fi
  )
  set -- node -r @swc-node/register "$here/demo.ts"
fi

now() { printf '%s\n' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f s", b - a }'; }

t0=$(now)
lab_provision
# The Linux guest the Node VMM (lib/vmm) boots inside the lab: the same kernel, its own initramfs.
vmm_guest_provision
t1=$(now)
echo "lab: provision took $(elapsed "$t0" "$t1") (kernel $LAB_KVER, cache $(lab_cache_dir))"
[ "$provision_only" = 0 ] || exit 0

# One guest at a time: the machine is small and shared, and TCG uses every core it gets.
exec 9>"$(lab_cache_dir)/guest.lock"
if ! flock -n 9; then
  echo "lab: another lab guest is running; waiting for it"
  # The wait has its own limit: --timeout bounds this run's guest, not someone else's.
  lock_wait=${VFIO_BRIDGE_LAB_LOCK_WAIT:-1200}
  flock -w "$lock_wait" 9 || lab_fail "waited ${lock_wait}s for another lab guest to finish (VFIO_BRIDGE_LAB_LOCK_WAIT)"
  echo "lab: waited $(elapsed "$t1" "$(now)") for the other guest"
fi

t1=$(now)
# Run directories of killed runs would otherwise pile up (each holds a 1 MiB ivshmem file).
find "$(lab_cache_dir)" -maxdepth 1 -name 'run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
run=$(mktemp -d "$(lab_cache_dir)/run.XXXXXX")
# The console of the last run stays behind for a post-mortem; the run directory does not.
last_console=$(lab_cache_dir)/last-console.log
cleanup() {
  [ ! -f "$run/console.log" ] || cp "$run/console.log" "$last_console"
  [ -z "${VFIO_BRIDGE_LAB_IVSHMEM:-}" ] || cp "$run/ivshmem.bin" "$VFIO_BRIDGE_LAB_IVSHMEM"
  rm -rf "$run"
}
trap cleanup EXIT
# The backing file stays in the run directory, which the guest reads uncached; a caller who wants
# to inspect it afterwards names a path in VFIO_BRIDGE_LAB_IVSHMEM and gets a copy at exit.
ivshmem_file=$run/ivshmem.bin
truncate -s "$LAB_IVSHMEM_SIZE" "$ivshmem_file"
mkdir "$run/blocker"

hil_devices=
for spec in $LAB_DEVICES; do
  hil_devices+="${hil_devices:+,}${spec%%=*}=${spec#*@}"
done

kernel_devices=
for spec in $LAB_KERNEL_DEVICES; do
  kernel_devices+="${kernel_devices:+,}${spec%%=*}=${spec#*@}"
done

{
  printf 'LAB_DEVICES=%q\n' "$LAB_DEVICES"
  printf 'LAB_KERNEL_DEVICES=%q\n' "$LAB_KERNEL_DEVICES"
  printf 'LAB_RUN_DIR=%q\n' "$run"
  printf 'LAB_REPO=%q\n' "$repo"
} >"$run/env"
{
  echo 'set -e'
  echo 'export HOME=/tmp/home XDG_CACHE_HOME=/tmp/cache TMPDIR=/tmp'
  printf 'export PATH=%q\n' "$PATH"
  printf 'export VFIO_BRIDGE_HIL_DEVICES=%q\n' "$hil_devices"
  printf 'export VFIO_BRIDGE_HIL_KERNEL_DEVICES=%q\n' "$kernel_devices"
  printf 'export VFIO_BRIDGE_HIL_IVSHMEM_FILE=%q\n' "$ivshmem_file"
  printf 'export VFIO_BRIDGE_VMM_KERNEL=%q VFIO_BRIDGE_VMM_INITRD=%q\n' "$VMM_GUEST_KERNEL" "$VMM_GUEST_INITRAMFS"
  echo 'export VFIO_BRIDGE_LAB=1'
  [ -z "${CI:-}" ] || printf 'export CI=%q\n' "$CI"
  echo 'mkdir -p "$HOME" "$XDG_CACHE_HOME"'
  case $PWD/ in "$repo"/*) cwd=$PWD ;; *) cwd=$repo ;; esac
  printf 'cd %q\n' "$cwd"
  echo 'set +e'
  # Through a pipe, not the console tty: tools then print plain lines (no progress redraws or
  # colours), which is what comes back over the serial console.
  printf '('
  printf ' %q' "$@"
  echo ' ) 2>&1 | cat'
  echo 'exit "${PIPESTATUS[0]}"'
} >"$run/cmd.sh"

# One vCPU: with two, QEMU 7.2's multi-threaded TCG now and then let one vCPU run the stale bytes
# of kernel text the other had just patched (static keys: KVM flips some whenever the first VM
# appears or the last goes), and the lab kernel died of an int3 Oops (in finish_task_switch,
# __schedule and sched_clock_cpu; 2 of 4 full runs). Single-threaded TCG with two vCPUs avoided the
# Oops but left the nested guests' timers stalling.
# An AMD model with SVM and nested paging: the guest loads kvm-amd and runs its own KVM guests
# (lib/kvm). The features dropped are those TCG cannot emulate, which QEMU would warn about.
lab_cpu=EPYC,+svm,+npt,-rdseed,-sha-ni,-xsavec,-3dnowprefetch,-misalignsse,-osvw,-topoext,-fxsr-opt,-nrip-save
qemu=(
  qemu-system-x86_64
  -M q35 -accel tcg,thread=multi -smp 1 -m 2048 -cpu "$lab_cpu"
  -nodefaults -display none -no-reboot
  -chardev stdio,id=con,signal=on -serial chardev:con
  -device intel-iommu,intremap=on,caching-mode=on
  -kernel "$LAB_VMLINUZ" -initrd "$LAB_INITRAMFS"
  # no_timer_check: on a loaded host, TCG can miss the boot-time timer IRQ check, which then panics
  # ("timer doesn't work through Interrupt-remapped IO-APIC") although the timer works.
  -append "console=ttyS0 intel_iommu=on quiet loglevel=3 panic=-1 no_timer_check rdinit=/init ${VFIO_BRIDGE_LAB_APPEND:-}"
  -device edu,addr=03.0
  -netdev user,id=n0,restrict=on -device rtl8139,netdev=n0,addr=04.0
  -netdev user,id=n1,restrict=on -device e1000e,netdev=n1,addr=05.0
  -object "memory-backend-file,id=shm,mem-path=$ivshmem_file,size=$LAB_IVSHMEM_SIZE,share=on"
  -device ivshmem-plain,memdev=shm,addr=06.0
  -device pcie-root-port,id=rp9,bus=pcie.0,addr=09.0,chassis=9,x-speed=5
  -device edu,bus=rp9,addr=00.0
  -device edu,addr=07.0,multifunction=on
  -fsdev "local,id=blocker,path=$run/blocker,security_model=none,readonly=on"
  -device virtio-9p-pci,fsdev=blocker,mount_tag=blocker,addr=07.1
  -netdev user,id=n2,restrict=on -device e1000,netdev=n2,addr=08.0
  -fsdev local,id=hostfs,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostfs,mount_tag=host,addr=10.0
  -fsdev "local,id=labfs,path=$run,security_model=none"
  -device virtio-9p-pci,fsdev=labfs,mount_tag=lab,addr=11.0
)

# The guest's console is the command's output. Lines are relayed as they come; the lab's own
# markers time the phases. The exit status is taken only from the rc file the guest writes.
boot_guest() {
  t_ready=
  t_done=
  while IFS= read -r line; do
    line=${line%$'\r'}
    case $line in
      'lab: ready') t_ready=$(now) ;;
      'lab: command exited '*) t_done=$(now) ;;
    esac
    printf '%s\n' "$line" >>"$run/console.log"
    case $line in 'lab: qemu exited '*) continue ;; esac
    printf '%s\n' "$line"
  done < <(
    status=0
    timeout -k 10 "$timeout_s" "${qemu[@]}" </dev/null 2>&1 || status=$?
    echo "lab: qemu exited $status"
  )
  t2=$(now)
  qemu_line=$(grep -a '^lab: qemu exited ' "$run/console.log" | tail -n 1 || true)
  qemu_rc=${qemu_line##* }
}

boot_guest
# On a loaded host, TCG has made the guest kernel panic before init ran (a boot-time timer check,
# an int3 in sched_clock_cpu). Nothing of the command ran then, so one more boot is safe; a guest
# that panics again (or fails the lab's own checks) is reported as before.
if [ -z "$t_ready" ] && [ ! -s "$run/failed" ] && [ "$qemu_rc" != 124 ] && [ "$qemu_rc" != 137 ] &&
  grep -aq 'Kernel panic' "$run/console.log" && ! grep -aq '^lab: FAIL ' "$run/console.log"; then
  echo "lab: the guest kernel panicked while booting; booting it once more"
  mv "$run/console.log" "$run/console.first-boot.log"
  t1=$(now)
  boot_guest
fi

echo "lab: boot took $(elapsed "$t1" "${t_ready:-$t2}")"
[ -z "$t_ready" ] || echo "lab: command took $(elapsed "$t_ready" "${t_done:-$t2}")"

if [ -s "$run/rc" ]; then
  rc=$(cat "$run/rc")
  [[ $rc =~ ^[0-9]+$ ]] || lab_fail "the guest wrote a malformed exit status: $rc"
  echo "lab: command exited $rc"
  exit "$rc"
fi
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  phase=boot
  [ -z "$t_ready" ] || phase=command
  echo "lab: FAIL timed out after ${timeout_s}s during the $phase phase" >&2
  exit 124
fi
if [ -s "$run/failed" ]; then
  lab_fail "$(cat "$run/failed")"
fi
failed=$(grep -a '^lab: FAIL ' "$run/console.log" | tail -n 1 || true)
[ -z "$failed" ] || lab_fail "${failed#lab: FAIL }"
if [ -z "$t_ready" ]; then
  lab_fail "the guest did not boot (no 'lab: ready' from its init; qemu exit status $qemu_rc; console in $last_console)"
fi
lab_fail "the command did not report an exit status (qemu exit status $qemu_rc; console in $last_console)"
