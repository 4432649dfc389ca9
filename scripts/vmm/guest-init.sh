#!/bin/busybox sh
# vfio-bridge VMM guest: PID 1 of the Linux guest a VMM boots with passed-through NICs (packed into
# its initramfs by scripts/vmm/guest.sh). The same image runs under QEMU and under the Node VMM, so
# everything it reports is a `guest: ...` console line that either side's harness can parse.
#
# Kernel command line parameters (all optional):
#   guest.rtl=8139cp|8139too   driver for the RTL8139 (8139too is loaded with use_io=1)
#   guest.pings=N              pings per interface (default 10), guest.interval=SECS (default 0.05)
#   guest.size=BYTES           ping payload (default 56)
#   guest.end=poweroff|reboot  how the guest ends (a machine without ACPI power-off uses reboot)
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "guest: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
say "init reached, kernel $(uname -r)"

rtl=8139cp
pings=10
interval=0.05
size=56
end=poweroff
for arg in $(cat /proc/cmdline); do
  case $arg in
    guest.rtl=*) rtl=${arg#*=} ;;
    guest.pings=*) pings=${arg#*=} ;;
    guest.interval=*) interval=${arg#*=} ;;
    guest.size=*) size=${arg#*=} ;;
    guest.end=*) end=${arg#*=} ;;
  esac
done

finish() {
  say "done"
  sync
  if [ "$end" = reboot ]; then reboot -f; else poweroff -f; fi
  sleep 5
  exit 1
}

load() {
  # shellcheck disable=SC2086 # $2 is a module parameter list, or nothing
  out=$(insmod "/modules/$1.ko" $2 2>&1) || say "FAIL module $1 did not load: ${out:-insmod failed}"
}
load mii
load e1000e
case $rtl in
  8139too) load 8139too use_io=1 ;;
  *) load 8139cp ;;
esac

# Every network-class function must end up with a driver; wait for the probes to finish.
nics=
for d in /sys/bus/pci/devices/*; do
  case $(cat "$d/class") in 0x0200*) nics="$nics ${d##*/}" ;; esac
done
[ -n "$nics" ] || say "FAIL no network device on the PCI bus"
tries=0
while :; do
  missing=
  for b in $nics; do [ -e "/sys/bus/pci/devices/$b/driver" ] || missing="$missing $b"; done
  [ -z "$missing" ] && break
  tries=$((tries + 1))
  if [ "$tries" -gt 200 ]; then
    say "FAIL no driver bound to$missing"
    break
  fi
  sleep 0.05
done
for b in $nics; do
  d=/sys/bus/pci/devices/$b
  drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
  say "driver $b $(cat "$d/vendor"):$(cat "$d/device") ${drv:-none}"
done
[ -n "$nics" ] && [ -z "$missing" ] && say "drivers bound"

# The lspci-like view of the bus, from sysfs.
for d in /sys/bus/pci/devices/*; do
  drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
  msi=$(ls "$d/msi_irqs" 2>/dev/null | wc -l)
  say "pci ${d##*/} class $(cat "$d/class") $(cat "$d/vendor"):$(cat "$d/device") rev $(cat "$d/revision") irq $(cat "$d/irq") msi $msi driver ${drv:-none}"
done
dmesg | grep -E 'e1000e|8139' | while IFS= read -r l; do say "dmesg $l"; done

# One interface at a time owns 10.0.2.15/24, so the route to each user-mode network's 10.0.2.2 is
# unambiguous.
for n in /sys/class/net/*; do
  ifc=${n##*/}
  [ "$ifc" = lo ] && continue
  drv=$(basename "$(readlink "$n/device/driver" 2>/dev/null)" 2>/dev/null)
  ip addr add 10.0.2.15/24 dev "$ifc"
  ip link set "$ifc" up
  t=0
  while [ "$(cat "$n/carrier" 2>/dev/null)" != 1 ] && [ "$t" -lt 200 ]; do
    sleep 0.05
    t=$((t + 1))
  done
  if [ "$(cat "$n/carrier" 2>/dev/null)" = 1 ]; then
    say "link $ifc $drv up"
  else
    say "FAIL link $ifc $drv did not come up"
  fi
  # One answer before the measured run: when the first reply came, and the gateway's address
  # resolved before the run, whose round trips then hold no ARP exchange.
  if ping -c 1 -W 5 -I "$ifc" 10.0.2.2 >/dev/null 2>&1; then
    say "first reply $ifc $drv"
  else
    say "no first reply $ifc $drv within 5 s"
  fi
  # A harness counts exits between these two markers. Console output costs exits of its own, so
  # the replies are printed after the run, and the pauses let the harness act on each marker while
  # the console is quiet.
  say "ping start $ifc $drv"
  sleep 1
  ping -c "$pings" -i "$interval" -s "$size" -W 5 -I "$ifc" 10.0.2.2 >/tmp/ping 2>&1
  say "ping done $ifc $drv"
  sleep 1
  while IFS= read -r l; do say "ping $ifc $l"; done </tmp/ping
  # Drivers free their interrupts when the link goes down: count them while it is up.
  grep -E "$ifc|$drv" /proc/interrupts | while IFS= read -r l; do say "irq $ifc $l"; done
  ip addr flush dev "$ifc"
  ip link set "$ifc" down
done

finish
