// FlatView on its own: the lookups every caller goes through (lookup, rangeAt with its last-range
// shortcut, nextStart), the pieces a guest access is cut into, and what a rendering depends on.
import fc from 'fast-check';
import { FlatView, MemoryRegion, type FlatRange } from '../../../lib';
import { pieceSize } from '../../../lib/memory/flat-view';
import { renderFlatView } from '../../../lib/memory/flat-view-render';

/** A flat view of RAM regions `[start, size]`, in a container of 2^20 bytes. */
function view(...ranges: Array<[number, number]>): FlatView {
  const root = MemoryRegion.container('root', 0x10_0000);
  ranges.forEach(([start, size], i) => root.addSubregion(MemoryRegion.ram(`r${i}`, size), start));
  return renderFlatView(root);
}

/** Whether `r` holds `addr`. */
const holds = (r: FlatRange, addr: number): boolean => addr >= r.addr && addr < r.addr + r.size;

describe('FlatView', () => {
  test('lookup and rangeAt find the range holding an address, or nothing in a gap', () => {
    const fv = view([0x1000, 0x1000], [0x3000, 0x10], [0x3010, 0x1000]);
    expect(fv.ranges.map((r) => r.region.name)).toEqual(['r0', 'r1', 'r2']);
    for (const [addr, name] of [
      [0x1000, 'r0'],
      [0x1fff, 'r0'],
      [0x300f, 'r1'],
      [0x3010, 'r2'],
      [0x2000, undefined],
      [0xfff, undefined],
      [0x4010, undefined],
      [0, undefined],
    ] as const) {
      expect(fv.lookup(addr)?.region.name).toBe(name);
      expect(fv.rangeAt(addr)?.region.name).toBe(name);
    }
    expect(() => fv.lookup(-1)).toThrow(RangeError);
    expect(() => fv.lookup(0.5)).toThrow(RangeError);
  });

  test('an empty view finds nothing', () => {
    const fv = renderFlatView(MemoryRegion.container('empty', 0x1000));
    expect(fv.ranges).toEqual([]);
    expect(fv.rangeAt(0)).toBeUndefined();
    expect(fv.lookup(0x800)).toBeUndefined();
    expect(fv.nextStart(0)).toBe(Infinity);
    expect(new FlatView([], null).rangeAt(5)).toBeUndefined();
  });

  test('rangeAt agrees with a linear search in any order of addresses, whatever it found last', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 60 }), fc.integer({ min: 1, max: 8 })), {
          maxLength: 12,
        }),
        fc.array(fc.integer({ min: 0, max: 80 }), { minLength: 1, maxLength: 40 }),
        (specs, probes) => {
          // Every other slot of 8 bytes is used, so the ranges never merge and gaps stay.
          const fv = view(...specs.map(([slot, size]): [number, number] => [slot * 16, size]));
          for (const p of probes) {
            const addr = p * 8 + (p % 3);
            const want = fv.ranges.find((r) => holds(r, addr));
            expect(fv.rangeAt(addr)).toBe(want);
            expect(fv.lookup(addr)).toBe(want);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  test('nextStart gives the start of the first range above an address', () => {
    const fv = view([0x1000, 0x100], [0x2000, 0x100]);
    expect(fv.nextStart(0)).toBe(0x1000);
    expect(fv.nextStart(0x1000)).toBe(0x2000);
    expect(fv.nextStart(0x1800)).toBe(0x2000);
    expect(fv.nextStart(0x2000)).toBe(Infinity);
  });

  test('pieces: gaps whole, ranges in the widest aligned pieces their region takes, lowest first', () => {
    const root = MemoryRegion.container('root', 0x1000);
    root.addSubregion(MemoryRegion.ram('ram', 0x10), 0x10);
    const io = { read: () => 0, write: () => undefined, valid: { maxAccessSize: 2 as const } };
    root.addSubregion(MemoryRegion.io('dev', 0x10, io), 0x28);
    const fv = renderFlatView(root);
    const cut = (addr: number, size: number): string[] => {
      const out: string[] = [];
      fv.pieces(addr, size, (at, n, r) => out.push(`${at.toString(16)}+${n}:${r?.region.name ?? '-'}`));
      return out;
    };
    expect(cut(0xc, 8)).toEqual(['c+4:-', '10+4:ram']);
    expect(cut(0x11, 16)).toEqual(['11+1:ram', '12+2:ram', '14+4:ram', '18+8:ram', '20+1:-']);
    expect(cut(0x26, 8)).toEqual(['26+2:-', '28+2:dev', '2a+2:dev', '2c+2:dev']);
  });

  test('pieces are aligned in the region, not in the address space', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const target = MemoryRegion.ram('t', 0x100);
    root.addSubregion(MemoryRegion.alias('a', target, 1, 0x10), 0x100);
    const fv = renderFlatView(root);
    const out: number[] = [];
    fv.pieces(0x103, 8, (_at, n) => out.push(n));
    // 0x103 is offset 4 in the target: a 4-byte piece, then a 4-byte one.
    expect(out).toEqual([4, 4]);
  });

  test('pieceSize picks the largest aligned power of two that fits', () => {
    expect(pieceSize(0, 8)).toBe(8);
    expect(pieceSize(0, 8, 4)).toBe(4);
    expect(pieceSize(4, 8)).toBe(4);
    expect(pieceSize(2, 3)).toBe(2);
    expect(pieceSize(3, 8)).toBe(1);
    expect(pieceSize(0, 7)).toBe(4);
  });

  test('a rendering depends on its root and the alias targets it walked through, nothing else', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const target = MemoryRegion.container('target', 0x100);
    const elsewhere = MemoryRegion.container('elsewhere', 0x100);
    root.addSubregion(MemoryRegion.alias('a', target, 0, 0x100), 0);
    const fv = renderFlatView(root);
    expect(fv.dependsOn(new Set([root]))).toBe(true);
    expect(fv.dependsOn(new Set([target]))).toBe(true);
    expect(fv.dependsOn(new Set([elsewhere]))).toBe(false);
    expect(fv.dependsOn(new Set())).toBe(false);
  });
});
