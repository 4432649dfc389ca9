import { AddressSpace, MemoryRegion } from '../../../lib/memory';
import { PciBus, SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { PCI_CONFIG_PORT, type PciConfigTarget, PciHostBridge, PciRootBus } from '../../../lib/vmm';
import { FakeVfioDevice } from '../../support/fake-device';
import { e1000eSpec, rtl8139Spec } from '../../support/pci-helpers';

const ADDR = 0;
const DATA = 4;
const cfg = (dev: number, fn: number, reg: number, bus = 0): number =>
  (0x80000000 | (bus << 16) | (dev << 11) | (fn << 8) | (reg & 0xfc)) >>> 0;

/** A config space that records every access that reaches it. */
class Recorder implements PciConfigTarget {
  readonly log: [string, number, number, number?][] = [];
  configRead(offset: number, size: 1 | 2 | 4): number {
    this.log.push(['r', offset, size]);
    return size === 4 ? 0x12345678 : size === 2 ? 0x1234 : 0x12;
  }
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.log.push(['w', offset, size, value]);
  }
}

describe('PciRootBus configuration mechanism #1', () => {
  it('latches CONFIG_ADDRESS only from a 32-bit write and passes Linux type 1 detection', () => {
    const h = new PciRootBus();
    // arch/x86/pci/direct.c: a byte write to 0xcfb must not disturb 0xcf8, which must read back.
    h.write(3, 1, 0x01);
    const saved = h.read(ADDR, 4);
    h.write(ADDR, 4, 0x80000000);
    expect(h.read(ADDR, 4)).toBe(0x80000000);
    h.write(ADDR, 4, saved);
    expect(h.read(2, 2)).toBe(0xffff);
    expect(h.stats.ignored).toBe(2);
    // ... and then the host bridge must be there with class 0x0600.
    h.write(ADDR, 4, cfg(0, 0, 0x08));
    expect(h.read(DATA + 2, 2)).toBe(0x0600);
  });

  it('describes its own host bridge and keeps its read-only registers so', () => {
    const h = new PciRootBus();
    h.write(ADDR, 4, cfg(0, 0, 0));
    expect(h.read(DATA, 4)).toBe(0x00081b36);
    h.write(DATA, 4, 0);
    expect(h.read(DATA, 4)).toBe(0x00081b36);
    h.write(ADDR, 4, cfg(0, 0, 0x04));
    h.write(DATA, 2, 0xffff);
    expect(h.read(DATA, 2)).toBe(0x0147);
    h.write(ADDR, 4, cfg(0, 0, 0x10));
    h.write(DATA, 4, 0xffffffff);
    expect(h.read(DATA, 4)).toBe(0); // no BARs
    h.write(ADDR, 4, cfg(0, 0, 0x3c));
    h.write(DATA, 1, 0x0b);
    expect(h.read(DATA, 4)).toBe(0x0b);
    h.reset();
    expect(h.read(ADDR, 4)).toBe(0);
  });

  it('routes data accesses to the attached function with the register from both ports', () => {
    const h = new PciRootBus();
    const r = new Recorder();
    h.attach(5, 0, r);
    h.write(ADDR, 4, cfg(5, 0, 0x3c));
    expect(h.read(DATA + 3, 1)).toBe(0x12);
    expect(h.read(DATA + 2, 2)).toBe(0x1234);
    h.write(DATA + 1, 1, 0xab);
    h.write(DATA, 4, 0xdeadbeef);
    expect(r.log).toEqual([
      ['r', 0x3f, 1],
      ['r', 0x3e, 2],
      ['w', 0x3d, 1, 0xab],
      ['w', 0x3c, 4, 0xdeadbeef],
    ]);
    expect(h.stats.cycles).toBe(4);
  });

  it('reads all-ones and drops writes for absent functions, other buses and a clear enable bit', () => {
    const h = new PciRootBus();
    const r = new Recorder();
    h.attach(5, 0, r);
    h.write(ADDR, 4, cfg(6, 0, 0));
    expect(h.read(DATA, 4)).toBe(0xffffffff);
    h.write(ADDR, 4, cfg(5, 1, 0));
    expect(h.read(DATA, 2)).toBe(0xffff);
    h.write(ADDR, 4, cfg(5, 0, 0, 1));
    h.write(DATA, 4, 1);
    h.write(ADDR, 4, cfg(5, 0, 0) & 0x7fffffff);
    expect(h.read(DATA, 1)).toBe(0xff);
    expect(r.log).toEqual([]);
    expect(h.stats).toMatchObject({ absent: 3, disabled: 1, cycles: 0 });
  });

  it('resets once per rising edge of the reset control start bit at 0xcf9', () => {
    let resets = 0;
    const h = new PciRootBus({ onReset: () => resets++ });
    h.write(1, 1, 0x02); // Linux reboot=pci: SYS_RST first ...
    expect(resets).toBe(0);
    expect(h.read(1, 1)).toBe(0x02);
    h.write(1, 1, 0x06); // ... then RST_CPU
    expect(resets).toBe(1);
    expect(h.read(1, 1)).toBe(0x02);
  });

  it('refuses VMM mistakes with RangeError and TypeError', () => {
    const h = new PciRootBus();
    expect(() => h.attach(0, 0, new Recorder())).toThrow(/host bridge/);
    h.attach(1, 0, new Recorder());
    expect(() => h.attach(1, 0, new Recorder())).toThrow(/already taken/);
    expect(() => h.attach(32, 0, new Recorder())).toThrow(RangeError);
    expect(() => h.attach(2, 8, new Recorder())).toThrow(RangeError);
    expect(() => h.attach(2, 0, {} as PciConfigTarget)).toThrow(TypeError);
    expect(() => h.read(5, 2)).toThrow(RangeError);
    expect(() => h.write(4, 2, 0x10000)).toThrow(RangeError);
    expect(h.detach(1, 0)).toBe(true);
    expect(h.detach(1, 0)).toBe(false);
  });

  it('as a port region: guest accesses that the ports do not take are reported, never thrown', () => {
    const h = new PciRootBus();
    const io = MemoryRegion.container('io', 0x10000);
    io.addSubregion(h.region(), PCI_CONFIG_PORT);
    const as = new AddressSpace('io', io, { log: null });
    let unassigned = 0;
    as.on('unassigned', () => unassigned++);
    as.write(PCI_CONFIG_PORT, 4, cfg(0, 0, 0));
    expect(as.read(PCI_CONFIG_PORT + 4, 4)).toBe(0x00081b36);
    // Misaligned: cut into two byte reads of the data port, as QEMU's address_space_rw cuts it.
    expect(as.read(PCI_CONFIG_PORT + 5, 2)).toBe(0x081b);
    as.write(PCI_CONFIG_PORT + 2, 4, 0); // straddles CONFIG_ADDRESS and CONFIG_DATA: four bytes
    expect(unassigned).toBe(0);
    as.close();
  });
});

describe('PciRootBus with VfioPciDevice', () => {
  it('enumerates and sizes BARs of a vfio-pci device through the ports', () => {
    const bus = new SystemAddressSpaces();
    const dev = VfioPciDevice.open(bus, new FakeVfioDevice(e1000eSpec()), { log: null });
    const h = new PciRootBus();
    h.attach(5, 0, dev);
    h.write(ADDR, 4, cfg(5, 0, 0));
    expect(h.read(DATA, 4)).toBe(0x10d38086);
    h.write(ADDR, 4, cfg(5, 0, 0x10));
    h.write(DATA, 4, 0xffffffff);
    expect(h.read(DATA, 4)).toBe(0xfffe0000);
    h.write(DATA, 4, 0xfebc0000);
    h.write(ADDR, 4, cfg(5, 0, 0x04));
    h.write(DATA, 2, 0x0002);
    expect(bus.mapinfo().some((r) => r.bar === 0 && r.addr === 0xfebc0000)).toBe(true);
    bus.close();
  });

  it('presents an ID override to the guest (10ec:8138 for an rtl8139)', () => {
    const bus = new SystemAddressSpaces();
    const dev = VfioPciDevice.open(bus, new FakeVfioDevice(rtl8139Spec()), { deviceId: 0x8138, log: null });
    const h = new PciRootBus();
    h.attach(4, 0, dev);
    h.write(ADDR, 4, cfg(4, 0, 0));
    expect(h.read(DATA, 4)).toBe(0x813810ec);
    bus.close();
  });
});

describe('the names before the rename', () => {
  test('PciHostBridge and PciBus still construct the renamed classes', () => {
    expect(new PciHostBridge()).toBeInstanceOf(PciRootBus);
    const spaces = new PciBus();
    expect(spaces).toBeInstanceOf(SystemAddressSpaces);
    spaces.close();
  });
});
