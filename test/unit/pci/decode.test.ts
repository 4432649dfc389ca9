import fc from 'fast-check';
import { barAddress, decodeBarRegister } from '../../../lib/pci/bar';
import { EmulatedConfig, mergeBits, walkCapabilities } from '../../../lib/pci/config';
import { formatDump } from '../../../lib/pci/dump';
import { classifyPieces, mapinfoColumn } from '../../../lib/pci/mapinfo';
import type { PciRegionTag } from '../../../lib/pci/types';

describe('decodeBarRegister', () => {
  it('decodes I/O, 32-bit, 64-bit and prefetchable BARs', () => {
    expect(decodeBarRegister(0x0000c001)).toEqual({ type: 'io', prefetchable: false, typeBits: 1 });
    expect(decodeBarRegister(0xfebf0000)).toEqual({ type: 'mem32', prefetchable: false, typeBits: 0 });
    expect(decodeBarRegister(0x0000000c)).toEqual({ type: 'mem64', prefetchable: true, typeBits: 0xc });
  });
});

describe('barAddress', () => {
  const mem = { type: 'mem32' as const, size: 0x1000, command: 2, limit: 2 ** 48 };
  it('returns the address with the size bits masked', () => {
    expect(barAddress({ ...mem, lo: 0xfebf1008 })).toBe(0xfebf1000);
  });
  it('is unmapped while memory decode is off, at 0, or at the top of 4 GiB for a 32-bit BAR', () => {
    expect(barAddress({ ...mem, lo: 0xfebf1000, command: 0 })).toBeNull();
    expect(barAddress({ ...mem, lo: 0 })).toBeNull();
    expect(barAddress({ ...mem, lo: 0xfffff000 })).toBeNull();
  });
  it('combines both halves of a 64-bit BAR and unmaps it beyond the address space', () => {
    expect(barAddress({ ...mem, type: 'mem64', lo: 0x4000000c, hi: 0x1 })).toBe(0x1_4000_0000);
    expect(barAddress({ ...mem, type: 'mem64', lo: 0, hi: 0x10000, limit: 2 ** 48 })).toBeNull();
    expect(barAddress({ ...mem, type: 'mem64', lo: 0, hi: 0xffff, limit: 2 ** 48 })).toBe(0xffff_0000_0000);
  });
  it('decodes I/O BARs on the I/O enable bit and the 64 KiB space', () => {
    const io = { type: 'io' as const, size: 0x100, command: 1, limit: 0x10000 };
    expect(barAddress({ ...io, lo: 0xc001 })).toBe(0xc000);
    expect(barAddress({ ...io, lo: 0xc001, command: 2 })).toBeNull();
    expect(barAddress({ ...io, lo: 0x10001 })).toBeNull();
  });
  it('needs the ROM enable bit for the ROM', () => {
    expect(barAddress({ ...mem, rom: true, size: 0x40000, lo: 0xfeb80000 })).toBeNull();
    expect(barAddress({ ...mem, rom: true, size: 0x40000, lo: 0xfeb80001 })).toBe(0xfeb80000);
  });
  it('never returns an address whose BAR leaves the space (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 4, max: 30 }),
        fc.nat(0xffffffff),
        fc.integer({ min: 16, max: 40 }),
        (bits, lo, limBits) => {
          const size = 2 ** bits;
          const limit = 2 ** limBits;
          const a = barAddress({ type: 'mem32', size, lo, command: 2, limit });
          if (a === null) return;
          expect(a % size).toBe(0);
          expect(a + size).toBeLessThanOrEqual(Math.min(limit, 0xffffffff));
          expect(a).toBeGreaterThan(0);
        },
      ),
    );
  });
});

describe('EmulatedConfig', () => {
  it('keeps non-writable emulated bits and merges them over physical ones', () => {
    const e = new EmulatedConfig(256);
    e.emulate(0x10, 4, 0x8n, 0xffffffffn, 0xfffff000n);
    e.write(0x10, 4, 0xffffffff);
    expect(e.long(0x10)).toBe(0xfffff008);
    expect(e.maskAt(0x10, 4)).toBe(0xffffffff);
    e.emulate(0x52, 2, 0n, 0xc000n, 0xc000n);
    expect(mergeBits(e.maskAt(0x52, 2), e.valueAt(0x52, 2), 0x0004, 2)).toBe(0x0004);
    e.write(0x52, 2, 0x8004);
    expect(mergeBits(e.maskAt(0x52, 2), e.valueAt(0x52, 2), 0x0004, 2)).toBe(0x8004);
  });
});

describe('walkCapabilities', () => {
  function space(bytes: Record<number, number>, size = 256): (o: number, s: 1 | 2 | 4) => number {
    const b = new Uint8Array(size);
    for (const [k, v] of Object.entries(bytes)) b[Number(k)] = v;
    const dv = new DataView(b.buffer);
    return (o, s) => (s === 1 ? dv.getUint8(o) : s === 2 ? dv.getUint16(o, true) : dv.getUint32(o, true));
  }
  it('follows the list and stops on a loop', () => {
    const read = space({ 6: 0x10, 0x34: 0x40, 0x40: 0x01, 0x41: 0x50, 0x50: 0x11, 0x51: 0x40 });
    expect(walkCapabilities(read, 256)).toEqual([
      { id: 1, offset: 0x40, extended: false },
      { id: 0x11, offset: 0x50, extended: false },
    ]);
  });
  it('ignores the list when the status bit is clear, and reads extended capabilities', () => {
    const read = space(
      { 0x34: 0x40, 0x100: 0x01, 0x101: 0x00, 0x102: 0x01, 0x103: 0x14, 0x140: 0x03, 0x142: 0x01 },
      4096,
    );
    expect(walkCapabilities(read, 4096)).toEqual([
      { id: 1, offset: 0x100, extended: true },
      { id: 3, offset: 0x140, extended: true },
    ]);
  });
});

describe('formatDump', () => {
  it('prints xp-style lines of 16 bytes', () => {
    expect(formatDump(0xfebf0000, 4, [1, 2, 3, 4, 5])).toBe(
      '00000000febf0000: 0x00000001 0x00000002 0x00000003 0x00000004\n00000000febf0010: 0x00000005',
    );
    expect(formatDump(0x10, 8, [0xffn])).toBe('0000000000000010: 0x00000000000000ff');
  });
});

describe('classifyPieces', () => {
  const tag = (role: PciRegionTag['role'], barOffset = 0): PciRegionTag => ({
    owner: 'vfio-pci',
    bdf: 'x',
    bar: 0,
    role,
    minAccess: 1,
    maxAccess: 8,
    barOffset,
  });
  const kinds = (t: PciRegionTag, addr: number, size: number, off: number) =>
    classifyPieces(t, addr, size, off).map((p) => [p.addr, p.size, p.offsetInRegion, p.mapinfo]);
  it('splits an mmap section into sub-page head, direct pages and sub-page tail', () => {
    expect(kinds(tag('mmap'), 0x1000, 0x2000, 0)).toEqual([[0x1000, 0x2000, 0, 'direct']]);
    expect(kinds(tag('mmap'), 0x1000, 0x800, 0)).toEqual([[0x1000, 0x800, 0, 'trapped-mmap']]);
    expect(kinds(tag('mmap'), 0x1078, 0x1f88, 0x78)).toEqual([
      [0x1078, 0xf88, 0x78, 'trapped-mmap'],
      [0x2000, 0x1000, 0x1000, 'direct'],
    ]);
    expect(kinds(tag('mmap'), 0x1000, 0x1100, 0)).toEqual([
      [0x1000, 0x1000, 0, 'direct'],
      [0x2000, 0x100, 0x1000, 'trapped-mmap'],
    ]);
    // Guest address and host offset not congruent modulo the page: nothing can be mapped directly.
    expect(kinds(tag('mmap'), 0x1800, 0x2000, 0)).toEqual([[0x1800, 0x2000, 0, 'trapped-mmap']]);
  });
  it('classifies fd-backed and emulated regions whole', () => {
    expect(kinds(tag('bar'), 0x1000, 0x1000, 0)).toEqual([[0x1000, 0x1000, 0, 'trapped-fd']]);
    expect(kinds(tag('rom'), 0x1000, 0x1000, 0)).toEqual([[0x1000, 0x1000, 0, 'trapped-fd']]);
    expect(kinds(tag('quirk'), 0x1070, 4, 0)).toEqual([[0x1070, 4, 0, 'emulated']]);
    expect(kinds(tag('msix-table'), 0x1000, 0x50, 0)).toEqual([[0x1000, 0x50, 0, 'emulated']]);
  });
  it('labels split ranges piece by piece in the mtree column', () => {
    expect(mapinfoColumn(classifyPieces(tag('mmap'), 0x1078, 0x1f88, 0x78))).toBe(
      'trapped-mmap 1078-1fff, direct 2000-2fff',
    );
    expect(mapinfoColumn(classifyPieces(tag('quirk'), 0x1070, 4, 0))).toBe('emulated');
  });
});
