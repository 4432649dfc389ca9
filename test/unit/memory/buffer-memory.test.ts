import { BufferMemory, FlatView, MemoryRegion } from '../../../lib';
import { closeAll, space } from './helpers';

afterEach(closeAll);

describe('BufferMemory', () => {
  test('fixed-width little-endian loads and stores', () => {
    const m = new BufferMemory(16);
    m.write64(8, 0x0102030405060708n);
    expect(m.read32(8)).toBe(0x05060708);
    expect(m.read16(12)).toBe(0x0304);
    expect(m.read8(15)).toBe(0x01);
    m.write8(0, 0xff);
    m.write16(2, 0xabcd);
    m.write32(4, 0xdeadbeef);
    expect(Array.from(new Uint8Array(m.buffer, 0, 8))).toEqual([0xff, 0, 0xcd, 0xab, 0xef, 0xbe, 0xad, 0xde]);
    expect(m.read64(0)).toBe(0xdeadbeefabcd00ffn);
    expect(new BufferMemory(new SharedArrayBuffer(4)).length).toBe(4);
  });

  test('out-of-bounds accesses are RangeErrors naming offset, width and limit', () => {
    const m = new BufferMemory(8);
    expect(() => m.read32(6)).toThrow('offset 6 with width 4 is out of bounds: limit 8');
    expect(() => m.write64(1, 0n)).toThrow(RangeError);
    expect(() => m.read8(-1)).toThrow(RangeError);
    expect(() => m.read8(0.5)).toThrow(RangeError);
    expect(() => new BufferMemory(-1)).toThrow(RangeError);
    expect(() => new BufferMemory('x' as never)).toThrow(TypeError);
  });
});

describe('FlatView.lookup', () => {
  test('finds ranges by binary search and rejects bad addresses', () => {
    const root = MemoryRegion.container('root', 2 ** 40);
    for (let i = 0; i < 100; i++) root.addSubregion(MemoryRegion.ram(`r${i}`, 0x100), i * 0x1000);
    const fv: FlatView = space(root).flatView;
    expect(fv.ranges).toHaveLength(100);
    for (const i of [99, 0, 50, 51, 7]) {
      expect(fv.lookup(i * 0x1000 + 0xff)!.region.name).toBe(`r${i}`);
      expect(fv.lookup(i * 0x1000 + 0x100)).toBeUndefined();
    }
    expect(fv.lookup(2 ** 53 - 1)).toBeUndefined();
    expect(() => fv.lookup(-1)).toThrow(RangeError);
    expect(() => fv.lookup(2 ** 53)).toThrow(RangeError);
    expect(() => fv.lookup(NaN)).toThrow(RangeError);
    expect(() => fv.lookup('1' as never)).toThrow(TypeError);
    expect(Object.isFrozen(fv.ranges)).toBe(true);
  });
});
