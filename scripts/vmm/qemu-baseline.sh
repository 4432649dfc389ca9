#!/usr/bin/env bash
# The QEMU side of bench:vmm, run inside the lab guest (scripts/vmm/bench.sh starts it there):
# QEMU with -accel kvm (nested) boots the VMM guest with the lab's e1000e and rtl8139 passed
# through by QEMU's own vfio-pci. It relays the guest's console and writes the run record that
# scripts/vmm/bench-report.ts reads (the format is in scripts/vmm/run-record.ts), the same record
# scripts/vmm/node-vmm.ts writes for the Node VMM:
#   - every console line with the seconds since QEMU's exec;
#   - at each interface's `ping start`/`ping done` markers, KVM's debugfs exit counters, and the
#     exits QEMU itself served between them, by reason and port, from the kvm_userspace_exit and
#     kvm_pio tracepoints (kvm-exit-probe.ts takes the same counts for the Node VMM).
# Without --record it prints its own summary at the end (bench-report.ts on this record alone).
#
#   qemu-baseline.sh --kernel FILE --initrd FILE [--pings N] [--rtl 8139cp|8139too] [--mem MIB]
#                    [--record FILE] [--brief]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

kernel=
initrd=
pings=200
rtl=8139cp
mem=256
record=
brief=0
while [ $# -gt 0 ]; do
  case $1 in
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --pings) pings=$2; shift 2 ;;
    --rtl) rtl=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --record) record=$2; shift 2 ;;
    --brief) brief=1; shift ;;
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

dbg=/sys/kernel/debug/kvm
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug || true
trace=/sys/kernel/tracing
mountpoint -q "$trace" || mount -t tracefs tracefs "$trace" 2>/dev/null || true
stats() {
  local f
  for f in exits io_exits mmio_exits halt_exits irq_exits; do
    [ ! -r "$dbg/$f" ] || printf ' %s=%s' "$f" "$(cat "$dbg/$f")"
  done
}
# hist_on/hist_off EVENT KEY: a hist trigger counting EVENT by KEY, installed before QEMU starts
# and removed after it ends. Installing or removing one enables or disables the tracepoint, which
# patches kernel text and, under the lab's TCG, stops every CPU for tens of milliseconds: never at
# a ping marker (kvm-exit-probe.ts does the same for the Node VMM). hist_read EVENT FILE: the counts
# so far; hist_delta START DONE: DONE's rows less START's, as a hist table.
hist_on() { echo "hist:keys=$2:sort=hitcount.descending" >"$trace/events/kvm/$1/trigger" 2>/dev/null || true; }
hist_off() { echo "!hist:keys=$2:sort=hitcount.descending" >"$trace/events/kvm/$1/trigger" 2>/dev/null || true; }
hist_read() { cat "$trace/events/kvm/$1/hist" 2>/dev/null >"$2" || true; }
hist_delta() {
  awk '
    function key() { line = $0; gsub(/[{}]/, "", line); split(line, f, " "); return f[2] }
    FNR == NR && /^\{.*hitcount:/ { start[key()] = $NF; next }
    FNR == NR && /^ *Hits:/ { hits0 = $2; next }
    FNR == NR { next }
    /^\{.*hitcount:/ { k = key(); n = $NF - start[k]; if (n > 0) rows[k] = n }
    /^ *Hits:/ { hits = $2 - hits0; have = 1 }
    END {
      for (k in rows) printf "{ key: %s } hitcount: %d\n", k, rows[k] | "sort -k6,6nr"
      close("sort -k6,6nr")
      if (have) printf "Hits: %d\n", hits
    }' "$1" "$2" 2>/dev/null || true
}
# hist_pairs FILE PREFIX TOTAL [ROWS]: a hist table's "{ key: value } hitcount: N" rows (the first
# ROWS of them) as " PREFIXvalue=N", and its total as " TOTAL=N" unless TOTAL is empty.
hist_pairs() {
  awk -v prefix="$2" -v total="$3" -v rows="${4:-1000}" '
    /^\{.*hitcount:/ && n++ < rows { gsub(/[{}]/, ""); printf " %s%s=%s", prefix, $2, $NF }
    /^ *Hits:/ && total != "" { printf " %s=%s", total, $2 }' "$1" 2>/dev/null || true
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
say() { if [ "$brief" = 1 ]; then printf 'qemu| %s\n' "$*"; else printf '%s\n' "$*"; fi; }
say "bench: qemu: ${qemu[*]}"

own_record=0
if [ -z "$record" ]; then
  record=$(mktemp)
  own_record=1
fi
tmp=$(mktemp -d)
trap 'hist_off kvm_userspace_exit reason; hist_off kvm_pio port.hex; rm -rf "$tmp"; [ "$own_record" = 0 ] || rm -f "$record"' EXIT
exec 7>"$record"
echo "side QEMU" >&7
echo "about QEMU $(qemu-system-x86_64 --version | head -n 1 | awk '{ print $4 }'), -accel kvm, times from its exec" >&7
echo "about guest RAM: $mem MiB of QEMU's default anonymous memory (transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown))" >&7

hist_on kvm_userspace_exit reason
hist_on kvm_pio port.hex
t0=${EPOCHREALTIME/./}
# The guest's /dev has no /dev/fd for process substitution: read QEMU through a pipe, in this shell.
shopt -s lastpipe
{
  st=0
  timeout -k 5 600 "${qemu[@]}" </dev/null 2>&1 || st=$?
  echo "bench: qemu exited $st"
} | while IFS= read -r line; do
  line=${line%$'\r'}
  us=$((${EPOCHREALTIME/./} - t0))
  case $line in
    'guest: ping start '*)
      hist_read kvm_userspace_exit "$tmp/userspace.start"
      hist_read kvm_pio "$tmp/pio.start"
      ifc_drv=${line#guest: ping start }
      echo "counters start $ifc_drv$(stats)" >&7
      ;;
    'guest: ping done '*)
      ifc_drv=${line#guest: ping done }
      hist_read kvm_userspace_exit "$tmp/userspace.done"
      hist_read kvm_pio "$tmp/pio.done"
      hist_delta "$tmp/userspace.start" "$tmp/userspace.done" >"$tmp/userspace"
      hist_delta "$tmp/pio.start" "$tmp/pio.done" >"$tmp/pio"
      echo "counters done $ifc_drv$(stats)$(hist_pairs "$tmp/userspace" user. user)" >&7
      echo "ports ${ifc_drv#* }$(hist_pairs "$tmp/pio" '' '' 6)" >&7
      ;;
    'bench: qemu exited '*)
      echo "end ${line#bench: }" >&7
      say "$line"
      continue
      ;;
  esac
  printf 't %d.%06d %s\n' $((us / 1000000)) $((us % 1000000)) "$line" >&7
  case $line in *' bytes from '*) [ "$brief" = 0 ] || continue ;; esac
  say "$line"
done
exec 7>&-

[ "$own_record" = 0 ] || node -r @swc-node/register "$here/bench-report.ts" --pings "$pings" "$record"
