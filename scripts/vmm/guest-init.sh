#!/bin/busybox sh
# vfio-bridge VMM guest: PID 1 of the Linux guest a VMM boots with passed-through NICs (packed into
# its initramfs by `vfio-bridge lab --vmm-init`, which scripts/lab/lab.sh passes). The same image
# runs under QEMU and under the Node VMM, so everything it reports is a `guest: ...` console line
# that either side's harness can parse.
#
# Kernel command line parameters (all optional):
#   guest.rtl=8139cp|8139too   driver for the RTL8139 (8139too is loaded with use_io=1)
#   guest.pings=N              pings per interface (default 10), guest.interval=SECS (default 0.05)
#   guest.size=BYTES           ping payload (default 56)
#   guest.end=poweroff|reboot  how the guest ends (a machine without ACPI power-off uses reboot)
#   guest.misbehave=1          before ending, do what a VMM must survive (see misbehave below)
#   guest.bar-over-ram=ADDR    before ending, move the RTL8139's BAR 1 over guest RAM at ADDR and
#                              back (see bar_over_ram below)
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "guest: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
say "init reached, kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpus online"
# With the harness's time of the line above, when the kernel's clock started: what came before it
# is the VMM's set-up, its firmware and the kernel's loading.
say "uptime $(cut -d ' ' -f 1 /proc/uptime) at init"
# Which clocksource and timer the kernel settled on: they decide which exits its timekeeping makes.
say "clock $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null) timer $(cat /sys/devices/system/clockevents/clockevent0/current_device 2>/dev/null)"

rtl=8139cp
pings=10
interval=0.05
size=56
end=poweroff
misbehave=0
bar_over_ram=
for arg in $(cat /proc/cmdline); do
  case $arg in
    guest.rtl=*) rtl=${arg#*=} ;;
    guest.pings=*) pings=${arg#*=} ;;
    guest.interval=*) interval=${arg#*=} ;;
    guest.size=*) size=${arg#*=} ;;
    guest.end=*) end=${arg#*=} ;;
    guest.misbehave=*) misbehave=${arg#*=} ;;
    guest.bar-over-ram=*) bar_over_ram=${arg#*=} ;;
  esac
done

# The start address of BAR $2 of device $1 (sysfs resource lines are "start end flags").
bar_start() { sed -n "$(($2 + 1))p" "/sys/bus/pci/devices/$1/resource" | awk '{ print $1 }'; }
# config_read DEV OFFSET SIZE / config_write DEV OFFSET BYTE: the device's configuration space.
config_read() { dd if="/sys/bus/pci/devices/$1/config" bs=1 skip="$2" count="$3" 2>/dev/null | od -An -tu"$3" | tr -d ' '; }
config_write() { printf "\\$(printf %o "$3")" | dd of="/sys/bus/pci/devices/$1/config" bs=1 seek="$2" conv=notrunc 2>/dev/null; }
# config_write32 DEV OFFSET VALUE: one aligned dword, little-endian.
config_write32() {
  o=
  for s in 0 8 16 24; do o="$o\\$(printf %o $((($3 >> s) & 255)))"; done
  # shellcheck disable=SC2059 # the format is the four octal escapes
  printf "$o" | dd of="/sys/bus/pci/devices/$1/config" bs=4 seek=$(($2 / 4)) count=1 conv=notrunc 2>/dev/null
}

# What a VMM must survive from its guest, on the e1000e with its driver unbound (so /dev/mem may
# reach its BARs): a BAR read after memory decode was turned off, MSI-X table writes of one and of
# two misaligned bytes, and a configuration write where the device has no register (0x40).
misbehave() {
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x8086:0x10d3 ] || continue
    b=${d##*/}
    [ -e "$d/driver" ] && echo "$b" >"$d/driver/unbind"
    bar0=$(bar_start "$b" 0)
    bar3=$(bar_start "$b" 3)
    cmd=$(config_read "$b" 4 1)
    config_write "$b" 4 $((cmd | 2))
    say "misbehave decode-on read $(devmem $((bar0 + 8)) 32)"
    config_write "$b" 4 $((cmd & ~2))
    say "misbehave decode-off read $(devmem $((bar0 + 8)) 32)"
    config_write "$b" 4 $((cmd | 2))
    devmem "$bar3" 8 0x5a
    devmem $((bar3 + 1)) 16 0x1234
    say "misbehave msix-table odd widths written"
    config_write "$b" 64 0x5a
    say "misbehave config 0x40 written"
  done
  say "misbehave done"
}

# A BAR a VMM cannot give KVM as a memory slot: the RTL8139's MMIO BAR 1 (8139too with use_io=1
# never touches it) moved over a page of guest RAM, as a buggy guest might, with memory decode
# turned off and on again while it is there, then put back where it was.
bar_over_ram() {
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor")" = 0x10ec ] || continue
    b=${d##*/}
    bar1=$(config_read "$b" 20 4)
    cmd=$(config_read "$b" 4 1)
    config_write "$b" 4 $((cmd & ~2))
    config_write32 "$b" 20 $((bar_over_ram))
    config_write "$b" 4 $((cmd | 2))
    say "bar-over-ram $b BAR 1 at $(printf 0x%x $((bar_over_ram)))"
    config_write "$b" 4 $((cmd & ~2))
    config_write "$b" 4 $((cmd | 2))
    config_write "$b" 4 $((cmd & ~2))
    config_write32 "$b" 20 "$bar1"
    config_write "$b" 4 "$cmd"
    say "bar-over-ram $b BAR 1 back at $(printf 0x%x $((bar1 & ~15)))"
  done
}

finish() {
  [ -n "$bar_over_ram" ] && bar_over_ram
  [ "$misbehave" = 1 ] && misbehave
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
dmesg | grep -E 'e1000e|8139|ttyS|clocksource|APIC timer|tsc:' | while IFS= read -r l; do say "dmesg $l"; done

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

# The inter-processor interrupts each CPU took (one column per CPU): on an SMP guest, the vCPUs
# reached each other.
grep -E '^ *(RES|CAL|TLB):' /proc/interrupts | while IFS= read -r l; do say "ipi $l"; done

finish
