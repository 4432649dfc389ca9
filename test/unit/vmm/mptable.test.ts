import {
  I8042ResetPort,
  IOAPIC_ADDRESS,
  LAPIC_ADDRESS,
  MPTABLE_END,
  MPTABLE_START,
  mpTableSize,
  pciIntxGsi,
  pciIntxRoutes,
  PciRootBus,
  writeMpTable,
} from '../../../lib/vmm';

const sum = (b: Uint8Array) => b.reduce((a, x) => (a + x) & 0xff, 0);
const str = (b: Uint8Array, at: number, n: number) => Buffer.from(b.subarray(at, at + n)).toString('latin1');

/** Reads a table back the way Linux's mpparse walks it (arch/x86/kernel/mpparse.c). */
function parse(mem: Uint8Array, base: number) {
  // smp_scan_config: a 16-byte "_MP_" structure whose bytes sum to 0.
  const fp = mem.subarray(0, 16);
  expect(str(fp, 0, 4)).toBe('_MP_');
  expect(fp[8]).toBe(1);
  expect(fp[9]).toBe(4);
  expect(sum(fp)).toBe(0);
  const v = new DataView(mem.buffer, mem.byteOffset);
  const tableAt = v.getUint32(4, true) - base;
  const len = v.getUint16(tableAt + 4, true);
  const t = mem.subarray(tableAt, tableAt + len);
  expect(str(t, 0, 4)).toBe('PCMP');
  expect(sum(t)).toBe(0);
  const count = v.getUint16(tableAt + 34, true);
  const lapic = v.getUint32(tableAt + 36, true);
  const entries: Record<string, number | string>[] = [];
  let at = tableAt + 44;
  for (let i = 0; i < count; i++) {
    const type = mem[at];
    if (type === 0) {
      entries.push({ kind: 'cpu', id: mem[at + 1], flags: mem[at + 3] });
      at += 20;
      continue;
    }
    if (type === 1) entries.push({ kind: 'bus', id: mem[at + 1], name: str(mem, at + 2, 6) });
    else if (type === 2)
      entries.push({ kind: 'ioapic', id: mem[at + 1], flags: mem[at + 3], addr: v.getUint32(at + 4, true) });
    else {
      entries.push({
        kind: type === 3 ? 'int' : 'lint',
        irqtype: mem[at + 1],
        flags: v.getUint16(at + 2, true),
        bus: mem[at + 4],
        srcirq: mem[at + 5],
        dst: mem[at + 6],
        pin: mem[at + 7],
      });
    }
    at += 8;
  }
  expect(at - tableAt).toBe(len);
  return { lapic, entries, end: at };
}

describe('MP table', () => {
  it('describes CPUs, buses, the IOAPIC, ISA IRQs, PCI INTx routes and LINT0/1 as Linux reads them', () => {
    const intx = [
      { slot: 4, fn: 0, pin: 1, gsi: pciIntxGsi(4, 1) },
      { slot: 5, fn: 0, pin: 2, gsi: pciIntxGsi(5, 2) },
    ];
    const mem = new Uint8Array(1024).fill(0xee);
    const size = writeMpTable(mem, MPTABLE_START, { cpus: 2, intx });
    expect(size).toBe(mpTableSize({ cpus: 2, intx }));
    expect(MPTABLE_START + size).toBeLessThanOrEqual(MPTABLE_END);
    expect(mem[size]).toBe(0xee); // nothing written past the table
    const { lapic, entries } = parse(mem, MPTABLE_START);
    expect(lapic).toBe(LAPIC_ADDRESS);
    expect(entries.filter((e) => e.kind === 'cpu')).toEqual([
      { kind: 'cpu', id: 0, flags: 3 },
      { kind: 'cpu', id: 1, flags: 1 },
    ]);
    expect(entries.filter((e) => e.kind === 'bus')).toEqual([
      { kind: 'bus', id: 0, name: 'PCI   ' },
      { kind: 'bus', id: 1, name: 'ISA   ' },
    ]);
    expect(entries.filter((e) => e.kind === 'ioapic')).toEqual([
      { kind: 'ioapic', id: 2, flags: 1, addr: IOAPIC_ADDRESS },
    ]);
    const isa = entries.filter((e) => e.kind === 'int' && e.bus === 1);
    expect(isa).toHaveLength(16);
    isa.forEach((e, irq) => expect(e).toMatchObject({ irqtype: 0, flags: 0, srcirq: irq, dst: 2, pin: irq }));
    const pci = entries.filter((e) => e.kind === 'int' && e.bus === 0);
    expect(pci).toEqual([
      { kind: 'int', irqtype: 0, flags: 0xf, bus: 0, srcirq: (4 << 2) | 0, dst: 2, pin: pciIntxGsi(4, 1) },
      { kind: 'int', irqtype: 0, flags: 0xf, bus: 0, srcirq: (5 << 2) | 1, dst: 2, pin: pciIntxGsi(5, 2) },
    ]);
    expect(entries.filter((e) => e.kind === 'lint')).toEqual([
      { kind: 'lint', irqtype: 3, flags: 0, bus: 1, srcirq: 0, dst: 0xff, pin: 0 },
      { kind: 'lint', irqtype: 1, flags: 0, bus: 1, srcirq: 0, dst: 0xff, pin: 1 },
    ]);
  });

  it('writes into any byte array for any 16-byte aligned address', () => {
    const ram = new Uint8Array(0x100000);
    writeMpTable(ram.subarray(0xf0000), 0xf0000, { cpus: 1 });
    expect(parse(ram.subarray(0xf0000), 0xf0000).entries).toHaveLength(1 + 2 + 1 + 16 + 2);
  });

  it('refuses bad specs, short buffers and bad addresses', () => {
    expect(() => mpTableSize({ cpus: 0 })).toThrow(RangeError);
    expect(() => mpTableSize({ cpus: 1, intx: [{ slot: 1, fn: 0, pin: 5, gsi: 16 }] })).toThrow(RangeError);
    expect(() => mpTableSize({ cpus: 1, intx: [{ slot: 1, fn: 0, pin: 1, gsi: 24 }] })).toThrow(RangeError);
    expect(() => writeMpTable(new Uint8Array(16), MPTABLE_START, { cpus: 1 })).toThrow(/needs \d+ bytes/);
    expect(() => writeMpTable(new Uint8Array(1024), MPTABLE_START + 4, { cpus: 1 })).toThrow(RangeError);
  });
});

describe('INTx routing', () => {
  it('rotates pins over IOAPIC inputs 16-23 by slot', () => {
    expect([1, 2, 3, 4].map((p) => pciIntxGsi(0, p))).toEqual([16, 17, 18, 19]);
    expect(pciIntxGsi(4, 1)).toBe(20);
    expect(pciIntxGsi(5, 4)).toBe(16);
    expect(() => pciIntxGsi(1, 0)).toThrow(RangeError);
    expect(() => pciIntxGsi(32, 1)).toThrow(RangeError);
  });

  it('reads each function’s interrupt pin from config space', () => {
    const host = new PciRootBus();
    const fn = (pin: number) => ({
      configRead: (o: number) => (o === 0x3d ? pin : 0),
      configWrite: () => {},
    });
    host.attach(3, 0, fn(1));
    host.attach(4, 0, fn(0)); // no INTx
    host.attach(4, 1, fn(2));
    expect(pciIntxRoutes(host)).toEqual([
      { slot: 3, fn: 0, pin: 1, gsi: pciIntxGsi(3, 1) },
      { slot: 4, fn: 1, pin: 2, gsi: pciIntxGsi(4, 2) },
    ]);
  });
});

describe('I8042ResetPort', () => {
  it('shows an empty input buffer, resets on 0xfe and ignores everything else', () => {
    let resets = 0;
    const k = new I8042ResetPort({ onReset: () => resets++ });
    expect(k.read(0x64) & 0x02).toBe(0);
    expect(k.read(0x64) & 0x01).toBe(1);
    expect(k.read(0x60)).toBe(0);
    k.write(0x64, 0xaa);
    k.write(0x60, 0xfe);
    expect(resets).toBe(0);
    k.write(0x64, 0xfe);
    expect(resets).toBe(1);
    expect(k.resets).toBe(1);
    expect(() => k.read(0x61)).toThrow(RangeError);
    expect(() => k.region(0x65 as never)).toThrow(RangeError);
  });
});
