#!/usr/bin/env bash
# The QEMU side of bench:vmm, run inside the lab guest (scripts/vmm/bench.sh starts it there):
# QEMU with -accel kvm (nested) boots the VMM guest with the lab's e1000e and rtl8139 passed
# through by QEMU's own vfio-pci, and this reports, from the guest's console lines:
#   - seconds from QEMU's start to the guest's init, and to both NIC drivers bound;
#   - seconds to the first answered ping;
#   - ping round trips through e1000e (p50, p99, min, max, loss), and through the RTL8139;
#   - KVM exits per ping over each interface's ping run, between the guest's start and done
#     markers: every exit from KVM's debugfs counters, and the exits QEMU itself served, by reason
#     and port, from the kvm_userspace_exit and kvm_pio tracepoints.
#
#   qemu-baseline.sh --kernel FILE --initrd FILE [--pings N] [--rtl 8139cp|8139too] [--mem MIB]
set -euo pipefail

kernel=
initrd=
pings=200
rtl=8139cp
mem=256
while [ $# -gt 0 ]; do
  case $1 in
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --pings) pings=$2; shift 2 ;;
    --rtl) rtl=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    *) echo "bench: FAIL unknown argument $1" >&2; exit 2 ;;
  esac
done
fail() { echo "bench: FAIL $*" >&2; exit 1; }
[ -r "$kernel" ] || fail "no kernel (--kernel)"
[ -r "$initrd" ] || fail "no initramfs (--initrd)"
[ -c /dev/kvm ] || fail "/dev/kvm is missing: the lab guest needs -cpu EPYC,+svm,+npt and kvm-amd"

# The lab's devices come as role=bdf pairs.
bdf_of() {
  local spec
  for spec in ${VFIO_BRIDGE_HIL_DEVICES//,/ }; do
    [ "${spec%%=*}" != "$1" ] || { echo "${spec#*=}"; return 0; }
  done
  fail "the lab lists no $1 device (VFIO_BRIDGE_HIL_DEVICES)"
}
e1000e=$(bdf_of e1000e)
rtl8139=$(bdf_of rtl8139)

# KVM's debugfs counters give every exit (io_exits counts port I/O served in the kernel too); the
# kvm_userspace_exit tracepoint, counted by a hist trigger, gives the exits QEMU itself served.
dbg=/sys/kernel/debug/kvm
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug || true
trace=/sys/kernel/tracing
mountpoint -q "$trace" || mount -t tracefs tracefs "$trace" 2>/dev/null || true
stats() {
  local f
  for f in exits io_exits mmio_exits halt_exits irq_exits; do
    printf '%s=%s ' "$f" "$(cat "$dbg/$f" 2>/dev/null || echo 0)"
  done
}
# hist_on/hist_off EVENT KEY [FILE]: count EVENT by KEY between the two calls, the table into FILE.
hist_on() { echo "hist:keys=$2:sort=hitcount.descending" >"$trace/events/kvm/$1/trigger" 2>/dev/null || true; }
hist_off() {
  cat "$trace/events/kvm/$1/hist" 2>/dev/null >"$3" || true
  echo "!hist:keys=$2:sort=hitcount.descending" >"$trace/events/kvm/$1/trigger" 2>/dev/null || true
}

rtl_dev=(-device "vfio-pci,host=$rtl8139")
# As 10ec:8138 the RTL8139 is an 8139too device: with use_io=1 every register access is port I/O.
[ "$rtl" != 8139too ] || rtl_dev=(-device "vfio-pci,host=$rtl8139,x-pci-device-id=0x8138")
append="console=ttyS0 quiet loglevel=3 panic=-1 guest.pings=$pings guest.rtl=$rtl"
qemu=(
  qemu-system-x86_64 -M q35 -nodefaults -accel kvm -cpu host -smp 1 -m "$mem"
  -display none -no-reboot -serial stdio
  -kernel "$kernel" -initrd "$initrd" -append "$append"
  -device "vfio-pci,host=$e1000e" "${rtl_dev[@]}"
)
echo "bench: qemu: ${qemu[*]}"

log=$(mktemp)
now() { printf '%s\n' "$EPOCHREALTIME"; }
since() { awk -v a="$t0" -v b="$1" 'BEGIN { printf "%.2f", b - a }'; }
t0=$(now)
t_init= t_bound= t_first= ping_if=
# The guest's /dev has no /dev/fd for process substitution: read QEMU through a pipe, in this shell.
shopt -s lastpipe
{ timeout -k 5 600 "${qemu[@]}" </dev/null 2>&1; echo "bench: qemu exited $?"; } | while IFS= read -r line; do
  line=${line%$'\r'}
  printf '%s\n' "$line" >>"$log"
  case $line in
    'guest: init reached'*) t_init=$(now) ;;
    'guest: drivers bound') t_bound=$(now) ;;
    'guest: ping start '*)
      hist_on kvm_userspace_exit reason
      hist_on kvm_pio port.hex
      drv=${line##* }
      stats >"$log.$drv.start"
      [ "$drv" != e1000e ] || ping_if=$(echo "$line" | awk '{ print $4 }')
      ;;
    'guest: ping done '*)
      drv=${line##* }
      hist_off kvm_userspace_exit reason "$log.$drv.userspace"
      hist_off kvm_pio port.hex "$log.$drv.pio"
      stats >"$log.$drv.done"
      ;;
  esac
  case $line in 'guest: ping '*' bytes from '*) [ -n "$t_first" ] || t_first=$(now) ;; esac
  printf '%s\n' "$line"
done

echo "bench: ---- QEMU $(qemu-system-x86_64 --version | head -n 1 | awk '{ print $4 }'), -accel kvm, e1000e $e1000e + rtl8139 $rtl8139 ($rtl)"
grep -q '^guest: FAIL' "$log" && grep '^guest: FAIL' "$log" | sed 's/^/bench: /'
[ -n "$t_init" ] || fail "the guest never reached its init"
echo "bench: qemu start to guest init      $(since "$t_init") s"
[ -n "$t_bound" ] || fail "the guest's NIC drivers did not both bind"
echo "bench: qemu start to drivers bound   $(since "$t_bound") s"
[ -z "$t_first" ] || echo "bench: qemu start to first ping reply $(since "$t_first") s"
[ -n "$ping_if" ] || fail "no e1000e ping run in the guest"
grep -a "^guest: ping $ping_if .*time=" "$log" | sed 's/.*time=\([0-9.]*\) ms.*/\1/' | sort -g >"$log.rtt"
n=$(wc -l <"$log.rtt")
[ "$n" -gt 0 ] || fail "no e1000e ping was answered"
awk -v n="$n" -v want="$pings" '
  { v[NR] = $1 }
  END {
    p50 = v[int((n - 1) * 0.50) + 1]; p99 = v[int((n - 1) * 0.99) + 1]
    printf "bench: e1000e ping rtt (ms)          n=%d/%d p50 %.3f p99 %.3f min %.3f max %.3f\n", n, want, p50, p99, v[1], v[n]
  }' "$log.rtt"
# Exits over each interface's ping run: KVM's debugfs counters (every exit, port I/O served in the
# kernel included) and the kvm_userspace_exit hist ("{ reason: N } hitcount: H" lines, "Hits: total").
for f in "$log".*.start; do
  [ -e "$f" ] || continue
  drv=${f%.start}
  drv=${drv##*.}
  [ -s "$log.$drv.done" ] || continue
  awk -v a="$(cat "$f")" -v b="$(cat "$log.$drv.done")" -v n="$pings" -v drv="$drv" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    for (i in x) { split(x[i], p, "="); split(y[i], q, "="); if (p[1] != "") d[p[1]] = (q[2] - p[2]) / n }
    printf "bench: %-8s kvm exits per ping   all %.1f (port I/O %.1f, MMIO to userspace %.1f, halt %.1f, external interrupt %.1f)\n", drv, d["exits"], d["io_exits"], d["mmio_exits"], d["halt_exits"], d["irq_exits"]
  }'
  if [ -s "$log.$drv.userspace" ]; then
    awk -v n="$pings" -v drv="$drv" '/^ *Hits:/ { printf "bench: %-8s exits to QEMU per ping %.2f\n", drv, $2 / n }' "$log.$drv.userspace"
    # KVM_EXIT_* numbers from linux/kvm.h for the reasons a passthrough guest produces.
    awk 'BEGIN { split("2 IO 5 HLT 6 MMIO 7 IRQ_WINDOW_OPEN 8 SHUTDOWN 10 INTR 17 INTERNAL_ERROR 24 SYSTEM_EVENT", a, " ")
                 for (i = 1; i < 16; i += 2) name[a[i]] = a[i + 1] }
         /^\{.*hitcount:/ { r = $3; printf "bench:   to QEMU: %s (%s): %s\n", name[r] ? name[r] : "reason", r, $NF }' "$log.$drv.userspace"
    { grep -a '^{.*hitcount:' "$log.$drv.pio" 2>/dev/null || true; } | head -n 6 | sed 's/^/bench:   port I\/O /'
  else
    echo "bench: $drv exits to QEMU per ping not measured (no kvm tracepoint hist triggers)"
  fi
done
# Every interface's round trips, for the RTL8139 next to e1000e.
for ifdrv in $(awk '/^guest: ping start / { print $4 "/" $5 }' "$log"); do
  { grep -a "^guest: ping ${ifdrv%/*} .*time=" "$log" || true; } | sed 's/.*time=\([0-9.]*\) ms.*/\1/' | sort -g |
    awk -v name="${ifdrv#*/}" '{ v[NR] = $1 } END { if (NR) printf "bench: %-8s ping rtt (ms)         n=%d p50 %.3f p99 %.3f\n", name, NR, v[int((NR - 1) * 0.5) + 1], v[int((NR - 1) * 0.99) + 1] }'
done
{ grep -a '^guest: ping .* packets transmitted' "$log" || true; } | sed 's/^guest: /bench: /'
{ grep -a '^guest: link \|^guest: driver \|^guest: irq ' "$log" || true; } | sed 's/^guest: /bench: /'
rm -f "$log" "$log".*
