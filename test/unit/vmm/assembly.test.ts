import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import {
  COM1_PORT,
  DEFAULT_PCI_WINDOWS,
  E820_RAM,
  IOAPIC_ADDRESS,
  loadLinux,
  MPTABLE_END,
  MPTABLE_START,
  mpTableSize,
  pcE820,
  PCI_CONFIG_PORT,
  PciRootBus,
  pciIntxGsi,
  pciIntxRoutes,
  placeBars,
  writeMpTable,
} from '../../../lib/vmm';
import { FakeVfioDevice } from '../../support/fake-device';
import { e1000eSpec, rtl8139Spec } from '../../support/pci-helpers';
import { bzImage } from './fake-bzimage';

const MIB = 1024 * 1024;

describe('the pieces assembled as a machine file would', () => {
  it('agree on memory layout, BAR windows and INTx wiring', () => {
    const bus = new SystemAddressSpaces();
    const host = new PciRootBus();
    for (const [slot, spec] of [
      [2, e1000eSpec()],
      [3, rtl8139Spec()],
    ] as const) {
      const fake = new FakeVfioDevice(spec);
      fake.config[0x3d] = 1;
      host.attach(slot, 0, VfioPciDevice.open(bus, fake, { log: null }));
    }
    const placed = placeBars(host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
    const ramSize = 128 * MIB;
    const e820 = pcE820({ ramSize });
    const ram = new Uint8Array(ramSize);
    const routes = pciIntxRoutes(host);
    const mpSize = writeMpTable(ram.subarray(MPTABLE_START), MPTABLE_START, { cpus: 2, intx: routes });
    const boot = loadLinux({
      ram,
      kernel: bzImage(),
      initrd: new Uint8Array(3 * MIB),
      cmdline: 'console=ttyS0',
      e820,
    });

    // The MP table sits in reserved memory, and nothing the boot wrote overlaps it or anything else.
    expect(MPTABLE_START + mpSize).toBeLessThanOrEqual(MPTABLE_END);
    expect(mpTableSize({ cpus: 2, intx: routes })).toBe(mpSize);
    expect(
      e820.some((e) => e.type === E820_RAM && e.addr < MPTABLE_END && e.addr + e.size > MPTABLE_START),
    ).toBe(false);
    const spans: [string, number, number][] = [
      ['mptable', MPTABLE_START, mpSize],
      ['zero page', boot.zeroPage, 4096],
      ['cmdline', boot.cmdline.addr, boot.cmdline.size],
      ['kernel', boot.kernel.addr, boot.kernel.initSize],
      ['initrd', boot.initrd!.addr, boot.initrd!.size],
      ...boot.cpu.written.map((w): [string, number, number] => [w.what, w.addr, w.size]),
    ];
    for (let i = 0; i < spans.length; i++) {
      for (let j = i + 1; j < spans.length; j++) {
        const [a, b] = [spans[i], spans[j]];
        expect([a[0], b[0], a[1] + a[2] <= b[1] || b[1] + b[2] <= a[1]]).toEqual([a[0], b[0], true]);
      }
    }
    // BARs live in the PCI hole, never in RAM, and below the IOAPIC; ports clear of the fixed devices.
    for (const p of placed) {
      if (p.type === 'io') {
        for (const fixed of [COM1_PORT, PCI_CONFIG_PORT, 0x60, 0x64, 0x70]) {
          expect(fixed >= p.address + p.size || fixed + 8 <= p.address).toBe(true);
        }
        continue;
      }
      expect(
        e820.some((e) => e.type === E820_RAM && p.address < e.addr + e.size && p.address + p.size > e.addr),
      ).toBe(false);
      expect(p.address + p.size).toBeLessThanOrEqual(IOAPIC_ADDRESS);
    }
    // The MP table's INTx routes are the interrupt lines firmware wrote.
    for (const r of routes) {
      const dev = host.function(r.slot, r.fn)!;
      expect(dev.configRead(0x3c, 1)).toBe(r.gsi);
    }
    bus.close();
  });
});
