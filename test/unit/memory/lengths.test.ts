import fc from 'fast-check';
import {
  type AccessLength,
  type AccessSize,
  BufferMemory,
  type FixedWidthMemory,
  MemoryRegion,
  SystemAddressSpaces,
  type UnassignedAccess,
} from '../../../lib';
import { closeAll, space } from './helpers';
import { Reference } from './reference';

afterEach(closeAll);

const LIMIT = 2 ** 53;

describe('accesses must end at or below 2^53', () => {
  const root = (): MemoryRegion => MemoryRegion.container('root', LIMIT - 1);

  test('an access reaching past 2^53 is a RangeError, not a wider value', () => {
    const as = space(root());
    expect(() => as.read(LIMIT - 1, 4)).toThrow(/must end at or below 2\^53/);
    expect(() => as.read(LIMIT - 1, 8)).toThrow(RangeError);
    expect(() => as.read(LIMIT - 4, 5)).toThrow(RangeError);
    expect(() => as.write(LIMIT - 1, 2, 0)).toThrow(RangeError);
    expect(() => as.write(LIMIT - 7, 8, 0n)).toThrow(RangeError);
    expect(() => as.read64Pair(LIMIT - 4, new Uint32Array(2))).toThrow(RangeError);
    expect(() => as.write64Pair(LIMIT - 4, 0, 0)).toThrow(RangeError);
    expect(as.unassignedCount).toBe(0);
  });

  test('the last bytes below 2^53 are still reachable, and reported with their exact size', () => {
    const events: UnassignedAccess[] = [];
    const as = space(root());
    as.on('unassigned', (e) => events.push(e));
    expect(as.read(LIMIT - 1, 1)).toBe(0xff);
    expect(as.read(LIMIT - 8, 8)).toBe(0xffff_ffff_ffff_ffffn);
    expect(as.read(LIMIT - 3, 3)).toBe(0xffffff);
    expect(events.map((e) => [e.addr, e.size])).toEqual([
      [LIMIT - 1, 1],
      [LIMIT - 8, 8],
      [LIMIT - 3, 3],
    ]);
  });

  test('SystemAddressSpaces dispatch applies the same rule', () => {
    const bus = new SystemAddressSpaces({ memorySize: LIMIT - 1 });
    try {
      expect(() => bus.dispatch('memory', LIMIT - 1, 4, false)).toThrow(RangeError);
      expect(() => bus.dispatch('memory', LIMIT - 1, 8, false)).toThrow(RangeError);
      expect(() => bus.mmioWrite(LIMIT - 2, 4, 0)).toThrow(RangeError);
      expect(bus.dispatch('memory', LIMIT - 4, 4, false)).toBe(0xffffffff);
    } finally {
      bus.close();
    }
  });
});

/** A device memory whose loads bring back junk above the loaded width, as the lab's TCG did. */
function wideMemory(length: number): FixedWidthMemory {
  const inner = new BufferMemory(length);
  for (let i = 0; i < length; i++) inner.write8(i, (i * 29 + 0x41) & 0xff);
  return {
    length,
    read8: (o) => inner.read8(o) + 0x140200,
    read16: (o) => inner.read16(o) + 0x7_0000,
    read32: (o) => inner.read32(o) + 2 ** 40,
    read64: (o) => inner.read64(o) + (1n << 70n),
    write8: (o, v) => inner.write8(o, v),
    write16: (o, v) => inner.write16(o, v),
    write32: (o, v) => inner.write32(o, v),
    write64: (o, v) => inner.write64(o, v),
  };
}

describe('values fit their access width', () => {
  test('pieces combined across ranges are each held to their width', () => {
    const a = wideMemory(0x10);
    const b = wideMemory(0x10);
    const root = MemoryRegion.container('root', 0x100);
    root.addSubregion(MemoryRegion.ramDevice('a', 0x10, a), 0x0);
    root.addSubregion(MemoryRegion.ramDevice('b', 0x10, b), 0x10);
    const as = space(root);
    const byte = (i: number): bigint => BigInt((i * 29 + 0x41) & 0xff);
    let want = 0n;
    for (let k = 0; k < 8; k++) want |= byte((0xc + k) % 0x10) << BigInt(8 * k);
    const v = as.read(0xc, 8) as bigint;
    expect(v).toBe(want);
    expect(v < 1n << 64n).toBe(true);
    // An odd length over one range is combined from pieces as well.
    expect(as.read(0x1, 3)).toBe(Number(byte(1) | (byte(2) << 8n) | (byte(3) << 16n)));
  });
});

describe('guest access lengths 1 to 8', () => {
  test('values are numbers up to 6 bytes and bigints for 7 and 8', () => {
    const ram = MemoryRegion.ram('ram', 0x20);
    const root = MemoryRegion.container('root', 0x100);
    root.addSubregion(ram, 0);
    const as = space(root);
    as.write(0, 7, 0x07_0605_0403_0201n);
    expect(as.read(0, 7)).toBe(0x07_0605_0403_0201n);
    as.write(8, 6, 0x0c0b_0a09_0807);
    expect(as.read(8, 6)).toBe(0x0c0b_0a09_0807);
    expect(() => as.write(0, 7, 1)).toThrow(TypeError);
    expect(() => as.write(0, 6, 1n)).toThrow(TypeError);
    expect(() => as.write(0, 3, 0x1_000000)).toThrow(RangeError);
    expect(() => as.write(0, 7, 1n << 56n)).toThrow(RangeError);
    expect(() => as.read(0, 0 as AccessLength)).toThrow(RangeError);
    expect(() => as.read(0, 2.5 as AccessLength)).toThrow(RangeError);
  });

  test('property: accesses split into naturally aligned pieces the region accepts, as address_space_rw', () => {
    const sizeArb = fc.constantFrom<AccessSize>(1, 2, 4, 8);
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            kind: fc.constantFrom('io', 'ramd', 'ram'),
            offset: fc.integer({ min: 0, max: 48 }),
            size: fc.integer({ min: 1, max: 24 }),
            max: sizeArb,
            prio: fc.integer({ min: -1, max: 1 }),
          }),
          { minLength: 1, maxLength: 5 },
        ),
        fc.integer({ min: 0, max: 63 }),
        fc.integer({ min: 1, max: 8 }),
        fc.boolean(),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        (specs, addr, len, isWrite, raw) => {
          const size = len as AccessLength;
          const root = MemoryRegion.container('root', 64);
          const ref = new Reference();
          const bytes = new Map<MemoryRegion, Uint8Array>();
          const calls: Array<{ r: MemoryRegion; off: number; size: number; max: number }> = [];
          const maxOf = new Map<MemoryRegion, number>();
          specs.forEach((s, i) => {
            const store = new Uint8Array(32);
            for (let k = 0; k < 32; k++) store[k] = (i * 53 + k * 7 + 1) & 0xff;
            let r: MemoryRegion;
            if (s.kind === 'io') {
              r = MemoryRegion.io(`io${i}`, s.size, {
                read(o, sz) {
                  calls.push({ r, off: o, size: sz, max: s.max });
                  let v = 0n;
                  for (let k = 0; k < sz; k++) v |= BigInt(store[o + k]) << BigInt(8 * k);
                  return sz === 8 ? v : Number(v);
                },
                write(o, sz, value) {
                  calls.push({ r, off: o, size: sz, max: s.max });
                  const v = BigInt(value);
                  for (let k = 0; k < sz; k++) store[o + k] = Number((v >> BigInt(8 * k)) & 0xffn);
                },
                valid: { minAccessSize: 1, maxAccessSize: s.max },
                impl: { minAccessSize: 1, maxAccessSize: 8 },
              });
            } else if (s.kind === 'ramd') {
              const mem = new BufferMemory(32);
              new Uint8Array(mem.buffer).set(store);
              bytes.set(MemoryRegion.ramDevice(`ramd${i}`, s.size, mem), new Uint8Array(mem.buffer));
              r = [...bytes.keys()].pop()!;
            } else {
              const buf = new ArrayBuffer(32);
              new Uint8Array(buf).set(store);
              r = MemoryRegion.ram(`ram${i}`, s.size, buf);
              bytes.set(r, new Uint8Array(buf));
            }
            if (s.kind === 'io') {
              bytes.set(r, store);
              maxOf.set(r, s.max);
            }
            root.addSubregion(r, s.offset, s.prio);
            ref.noteAdded(r);
          });
          const as = space(root);
          const end = Math.min(addr + size, 64);
          const n = (end - addr) as AccessLength;
          const hits = Array.from({ length: n }, (_, k) => ref.resolve(root, addr + k));
          const shadow = new Map([...bytes].map(([r, b]) => [r, b.slice()]));
          if (isWrite) {
            const v = BigInt.asUintN(8 * n, raw);
            as.write(addr, n, n >= 7 ? v : Number(v));
            hits.forEach((h, k) => {
              if (h !== null) shadow.get(h.region)![h.offset] = Number((v >> BigInt(8 * k)) & 0xffn);
            });
            for (const [r, b] of bytes) expect(b).toEqual(shadow.get(r));
          } else {
            let want = 0n;
            hits.forEach((h, k) => {
              want |= BigInt(h === null ? 0xff : shadow.get(h.region)![h.offset]) << BigInt(8 * k);
            });
            expect(as.read(addr, n)).toBe(n >= 7 ? want : Number(want));
          }
          // What each io region saw, whatever the length: naturally aligned pieces no wider than
          // it accepts (a too wide or misaligned 1/2/4/8-byte access is cut as well), so none of
          // them was refused; only holes are reported.
          for (const c of calls) {
            expect(c.size).toBeLessThanOrEqual(c.max);
            expect(c.off % c.size).toBe(0);
          }
          const pieces = calls.reduce((sum, c) => sum + c.size, 0);
          const inIo = hits.filter((h) => h !== null && maxOf.has(h.region)).length;
          expect(pieces).toBe(inIo);
          if (hits.every((h) => h !== null)) expect(as.unassignedCount).toBe(0);
          closeAll();
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('flat view lookup over skewed layouts', () => {
  test('property: lookup equals a linear scan, whatever the spread of the ranges', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 52 }), fc.integer({ min: 1, max: 4096 })), {
          minLength: 1,
          maxLength: 60,
        }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 40 }),
        (placements, probes) => {
          // Clusters at widely different magnitudes: some buckets get many ranges, most none.
          const root = MemoryRegion.container('root', LIMIT - 1);
          const taken: Array<[number, number]> = [];
          placements.forEach(([exp, size], i) => {
            const at = Math.min(2 ** exp + i * 8192, LIMIT - 1 - size);
            if (taken.some(([s, e]) => at < e && s < at + size)) return;
            taken.push([at, at + size]);
            root.addSubregion(MemoryRegion.ram(`r${i}`, size), at);
          });
          const as = space(root);
          const fv = as.flatView;
          const edges = taken.flatMap(([s, e]) => [s - 1, s, e - 1, e]).filter((a) => a >= 0 && a < LIMIT);
          const addrs = [...edges, ...probes.map((p) => Math.floor(p * (LIMIT - 1)))];
          for (const a of addrs) {
            const want = fv.ranges.find((r) => a >= r.addr && a < r.addr + r.size);
            expect(fv.lookup(a)).toBe(want);
          }
          closeAll();
        },
      ),
      { numRuns: 300 },
    );
  });
});
