// A ram region whose backing a factory makes on the first access through the memory model: nothing
// before (placing it, rendering, listeners), the right bytes after, and clear errors for a factory
// that returns the wrong thing.
import { MemoryRegion, type FlatRange } from '../../../lib/memory';
import { ramShownBy } from '../../../lib/memory/address-space';
import { closeAll, flat, space, unassignedSpace } from './helpers';

afterEach(closeAll);

/** A factory over `buffer` that counts its calls. */
function counting(buffer: ArrayBuffer | SharedArrayBuffer | (() => never)): {
  make: () => ArrayBuffer | SharedArrayBuffer;
  calls: () => number;
} {
  let n = 0;
  return {
    make: () => {
      n++;
      return typeof buffer === 'function' ? buffer() : buffer;
    },
    calls: () => n,
  };
}

describe('a lazily-backed ram region', () => {
  test('makes its buffer on the first guest access, not when placed, rendered or listened to', () => {
    const buf = new ArrayBuffer(0x2000);
    const f = counting(buf);
    const r = MemoryRegion.ram('lazy', 0x2000, f.make);
    const { as, root } = unassignedSpace();
    const seen: FlatRange[] = [];
    as.addMemoryListener({ regionAdd: (s) => seen.push(s) });
    root.addSubregion(r, 0x4000);
    expect(flat(as)).toEqual([[0x4000, 0x2000, 'lazy', 0]]);
    expect(seen.map((s) => s.region.name)).toEqual(['lazy']);
    expect(r.allocatedBacking).toBeNull();
    expect(r.backingLost).toBe(false);
    expect(f.calls()).toBe(0);

    as.write(0x4010, 4, 0x11223344);
    expect(f.calls()).toBe(1);
    expect(r.allocatedBacking).toBe(buf);
    expect(new DataView(buf).getUint32(0x10, true)).toBe(0x11223344);
    expect(as.read(0x4010, 4)).toBe(0x11223344);
    expect(r.backing).toBe(buf);
    expect(f.calls()).toBe(1); // made once
  });

  test('serves every access path from the factory buffer: widths, pairs, and accesses that cross ranges', () => {
    const buf = new ArrayBuffer(0x1000);
    const { as, root, events } = unassignedSpace();
    root.addSubregion(
      MemoryRegion.ram('a', 0x1000, () => buf),
      0x1000,
    );
    as.write(0x1000, 8, 0x0102030405060708n);
    expect(as.read(0x1004, 2)).toBe(0x0304);
    as.write64Pair(0x1100, 0xaabbccdd, 0x11223344);
    const out = new Uint32Array(2);
    as.read64Pair(0x1100, out);
    expect([...out]).toEqual([0xaabbccdd, 0x11223344]);
    expect(new DataView(buf).getBigUint64(0x100, true)).toBe(0x11223344aabbccddn);
    // Crosses from the region's last bytes into unassigned space: split, the tail reported.
    as.write(0x1ffe, 4, 0xffffbeef);
    expect(new DataView(buf).getUint16(0xffe, true)).toBe(0xbeef);
    expect(events.map((e) => [e.addr, e.size, e.reason])).toEqual([[0x2000, 2, 'unassigned']]);
  });

  test('a buffer from an alias window starts at the region, not the alias', () => {
    const buf = new ArrayBuffer(0x3000);
    const r = MemoryRegion.ram('r', 0x3000, () => buf);
    const root = MemoryRegion.container('root', 0x10000);
    root.addSubregion(MemoryRegion.alias('view', r, 0x1000, 0x1000), 0);
    const as = space(root);
    as.write(0x8, 1, 0x5a);
    expect(new Uint8Array(buf)[0x1008]).toBe(0x5a);
  });

  test('a factory result that is not a buffer, or too small, is a typed error naming the region', () => {
    const { as, root } = unassignedSpace();
    const bad = MemoryRegion.ram('bad', 0x100, () => new Uint8Array(0x100) as unknown as ArrayBuffer);
    root.addSubregion(bad, 0);
    expect(() => as.read(0, 4)).toThrow(TypeError);
    expect(() => as.read(0, 4)).toThrow(
      "the backing factory of ram region 'bad' returned a Uint8Array: it must return an ArrayBuffer or SharedArrayBuffer",
    );
    const small = MemoryRegion.ram('small', 0x100, () => new ArrayBuffer(0x80));
    root.addSubregion(small, 0x1000);
    expect(() => as.write(0x1000, 1, 1)).toThrow(RangeError);
    expect(() => as.write(0x1000, 1, 1)).toThrow(
      "the backing factory of ram region 'small' returned a buffer of 128 bytes, fewer than the region's 256",
    );
    const detached = new ArrayBuffer(0x100);
    structuredClone(detached, { transfer: [detached] });
    const gone = MemoryRegion.ram('gone', 0x100, () => detached);
    expect(() => gone.backing).toThrow(/returned a buffer of 0 bytes.*detached buffer/);
    expect(bad.allocatedBacking).toBeNull();
    expect(small.allocatedBacking).toBeNull();
  });

  test('a factory that throws fails the access with its error, and is asked again next time', () => {
    let fail = true;
    const buf = new ArrayBuffer(0x100);
    const r = MemoryRegion.ram('flaky', 0x100, () => {
      if (fail) throw new Error('not yet');
      return buf;
    });
    expect(() => r.backing).toThrow('not yet');
    fail = false;
    expect(r.backing).toBe(buf);
  });

  test('is refused as a backing of any other kind, and cannot grow past its size', () => {
    expect(() => MemoryRegion.ram('x', 16, 'buffer' as never)).toThrow(
      "backing of ram region 'x' must be an ArrayBuffer, a SharedArrayBuffer or a function returning one",
    );
    const r = MemoryRegion.ram('fixed', 0x100, () => new ArrayBuffer(0x1000));
    r.setSize(0x80);
    r.setSize(0x100);
    expect(() => r.setSize(0x101)).toThrow("ram region 'fixed' size 257 exceeds its backing of 256 bytes");
  });

  test('released by its owner, it is dropped from the flat view at the next rendering without being made', () => {
    const f = counting(() => {
      throw new Error('closed');
    });
    const r = MemoryRegion.ram('gone', 0x1000, f.make);
    const { as, root, events } = unassignedSpace();
    r.releaseBacking();
    expect(r.backingLost).toBe(true);
    root.addSubregion(r, 0x1000);
    expect(flat(as)).toEqual([]);
    expect(as.read(0x1000, 4)).toBe(0xffffffff);
    as.write(0x1000, 4, 1);
    expect(events.map((e) => [e.addr, e.isWrite, e.reason])).toEqual([
      [0x1000, false, 'unassigned'],
      [0x1000, true, 'unassigned'],
    ]);
    expect(f.calls()).toBe(0);
    expect(() => r.backing).toThrow('closed');
  });

  test('ramShownBy finds it by the region while its buffer does not exist', () => {
    const r = MemoryRegion.ram('pc.ram', 0x1000, () => new ArrayBuffer(0x1000));
    const other = MemoryRegion.ram('other', 0x1000, () => new ArrayBuffer(0x1000));
    const root = MemoryRegion.container('root', 0x10000);
    root.addSubregion(MemoryRegion.alias('low', r, 0, 0x800), 0);
    root.addSubregion(other, 0x4000);
    space(root, 'memory');
    expect(ramShownBy(new Set(), new Set([r]))).toEqual([{ space: 'memory', region: 'pc.ram' }]);
    expect(ramShownBy(new Set())).toEqual([]);
    expect(r.allocatedBacking).toBeNull();
  });
});
