import { readFileSync } from 'node:fs';
import { SystemAddressSpaces, VfioPciDevice } from 'vfio-bridge';
import {
  Uart16550,
  PciRootBus,
  I8042ResetPort,
  CmosRtc,
  placeBars,
  pciIntxGsi,
  pciIntxRoutes,
} from 'vfio-bridge';
import { pcE820, loadLinux, writeMpTable, MPTABLE_START, defaultIrqchipRoutes } from 'vfio-bridge';

const ramSize = 256 * 2 ** 20;
const kernel = readFileSync('/boot/vmlinuz');
const initrd = readFileSync('initramfs.cpio');
const reset = () => console.log('the guest asked for a reset');
const irqLine = (irq: number, level: boolean) => console.log(`IRQ ${irq} ${level ? 'high' : 'low'}`); // vm.irqLine on KVM

const bus = new SystemAddressSpaces();
const host = new PciRootBus({ onReset: reset }); // 0xcf8-0xcff, reset at 0xcf9
host.attach(2, 0, VfioPciDevice.openByBdf(bus, '0000:00:05.0'));
host.attach(3, 0, VfioPciDevice.openByBdf(bus, '0000:00:04.0', { deviceId: 0x8138 }));
placeBars(host, undefined, { intxGsi: pciIntxGsi }); // as firmware: sized, placed, decode on
const uart = new Uart16550({ onLine: console.log, onIrq: (level) => irqLine(4, level) });
const kbd = new I8042ResetPort({ onReset: reset });
const rtc = new CmosRtc(); // 0x70/0x71
bus.io.root.addSubregion(uart.region(), 0x3f8); // and host.region() at 0xcf8, kbd at 0x60/0x64, rtc at 0x70
const ram = new Uint8Array(ramSize); // guest RAM below the PCI hole, from address 0 (GuestRam in a real VMM)
writeMpTable(ram.subarray(MPTABLE_START), MPTABLE_START, { cpus: 1, intx: pciIntxRoutes(host) });
const boot = loadLinux({ ram, kernel, initrd, cmdline: 'console=ttyS0 reboot=k', e820: pcE820({ ramSize }) });
// boot.cpu.regs / boot.cpu.sregs → KVM_SET_REGS / KVM_SET_SREGS; defaultIrqchipRoutes() + MSI routes → KVM_SET_GSI_ROUTING
console.log(boot.cpu, defaultIrqchipRoutes().length, kbd, rtc);
