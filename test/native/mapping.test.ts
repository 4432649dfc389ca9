import * as fs from 'node:fs';

import { Mapping, VfioError, memfd, type AccessSize } from '../../lib';
import { memfdMapping } from './helpers';

const WIDTHS: AccessSize[] = [1, 2, 4, 8];
const SIZE = 8192;

describe('Mapping on a memfd', () => {
  let t: ReturnType<typeof memfdMapping>;
  beforeEach(() => {
    t = memfdMapping(SIZE);
  });
  afterEach(() => t.dispose());

  test('each width at every offset of the first 24 bytes (aligned and unaligned) is little-endian', () => {
    for (const width of WIDTHS) {
      for (let off = 0; off < 24; off++) {
        const pattern = Buffer.alloc(width);
        for (let i = 0; i < width; i++) pattern[i] = (off * 16 + i * 37 + width) & 0xff;
        const value = width === 8 ? pattern.readBigUInt64LE(0) : pattern.readUIntLE(0, width);
        t.mapping.write(off, width, value);
        // What the file holds is exactly the little-endian bytes, and nothing around them changed.
        expect(t.bytes(off, width)).toEqual(pattern);
        expect(t.mapping.read(off, width)).toBe(value);
      }
    }
  });

  test('a store touches exactly its width', () => {
    for (const width of WIDTHS) {
      t.mapping.writeBlock(0, new Uint8Array(64).fill(0xaa), 1);
      const off = 17;
      t.mapping.write(off, width, width === 8 ? 0n : 0);
      const after = t.bytes(0, 64);
      for (let i = 0; i < 64; i++) expect(after[i]).toBe(i >= off && i < off + width ? 0 : 0xaa);
    }
  });

  test('typed accessors return the right types and ranges', () => {
    t.mapping.write64(8, 0xfedcba9876543210n);
    expect(t.mapping.read8(8)).toBe(0x10);
    expect(t.mapping.read16(8)).toBe(0x3210);
    expect(t.mapping.read32(8)).toBe(0x76543210);
    expect(t.mapping.read32(12)).toBe(0xfedcba98);
    expect(t.mapping.read64(8)).toBe(0xfedcba9876543210n);
    t.mapping.write32(0, 0xffffffff);
    expect(t.mapping.read32(0)).toBe(0xffffffff);
    t.mapping.write16(100, 0xbeef);
    t.mapping.write8(102, 0x7f);
    expect(t.bytes(100, 3)).toEqual(Buffer.from([0xef, 0xbe, 0x7f]));
  });

  test('read64Pair and write64Pair are one 8-byte access split in halves', () => {
    t.mapping.write64Pair(3, 0x89abcdef, 0x01234567);
    expect(t.mapping.read64(3)).toBe(0x0123456789abcdefn);
    const out = new Uint32Array(2);
    t.mapping.write64(SIZE - 8, 0xdeadbeefcafef00dn);
    t.mapping.read64Pair(SIZE - 8, out);
    expect([...out]).toEqual([0xcafef00d, 0xdeadbeef]);
    expect(() => t.mapping.read64Pair(0, new Uint32Array(1))).toThrow(TypeError);
    expect(() => t.mapping.read64Pair(0, [0, 0] as unknown as Uint32Array)).toThrow(TypeError);
  });

  test('offsets >= 2^32 do not alias low offsets', () => {
    // The fast path writes only the low word; a large offset must be rejected, not wrapped to 0.
    expect(() => t.mapping.read32(2 ** 32)).toThrow(RangeError);
    t.mapping.write32(0, 0x600dcafe);
    expect(() => t.mapping.read32(2 ** 32)).toThrow(/offset 4294967296 width 4 .*length 8192/);
    expect(() => t.mapping.write32(2 ** 32, 0xbadbad00)).toThrow(/offset 4294967296 width 4 .*length 8192/);
    expect(() => t.mapping.write8(2 ** 32 + 1, 0xbb)).toThrow(RangeError);
    expect(t.mapping.read32(0)).toBe(0x600dcafe);
    expect(t.bytes(0, 4)).toEqual(Buffer.from([0xfe, 0xca, 0x0d, 0x60]));
  });

  test.each(WIDTHS)(
    'width %d: out-of-range accesses throw a RangeError naming offset, width and limit',
    (width) => {
      const before = t.bytes(0, SIZE);
      const bad = [
        SIZE - width + 1,
        SIZE,
        SIZE + 100,
        -1,
        0.5,
        NaN,
        Infinity,
        Number.MAX_SAFE_INTEGER,
        2 ** 53,
      ];
      for (const off of bad) {
        expect(() => t.mapping.read(off, width)).toThrow(RangeError);
        expect(() => t.mapping.write(off, width, width === 8 ? 1n : 1)).toThrow(RangeError);
      }
      expect(() => t.mapping.read(SIZE, width)).toThrow(
        new RegExp(`offset ${SIZE} width ${width} is outside the mapping \\(length ${SIZE}\\)`),
      );
      // The last in-range offset works, and nothing was touched by the failed stores.
      expect(t.bytes(0, SIZE)).toEqual(before);
      expect(() => t.mapping.read(SIZE - width, width)).not.toThrow();
    },
  );

  test('wrong types are TypeErrors and bad values RangeErrors', () => {
    expect(() => t.mapping.read32('4' as unknown as number)).toThrow(TypeError);
    expect(() => t.mapping.read8(undefined as unknown as number)).toThrow(TypeError);
    expect(() => t.mapping.write32(0, '1' as unknown as number)).toThrow(TypeError);
    expect(() => t.mapping.write64(0, 1 as unknown as bigint)).toThrow(TypeError);
    expect(() => t.mapping.write8(0, 256)).toThrow(/value 256 does not fit in 1 byte/);
    expect(() => t.mapping.write16(0, -1)).toThrow(RangeError);
    expect(() => t.mapping.write32(0, 2 ** 32)).toThrow(RangeError);
    expect(() => t.mapping.write32(0, 1.5)).toThrow(RangeError);
    expect(() => t.mapping.write64(0, -1n)).toThrow(RangeError);
    expect(() => t.mapping.write64(0, 2n ** 64n)).toThrow(RangeError);
    expect(() => t.mapping.write64Pair(0, 2 ** 32, 0)).toThrow(RangeError);
    expect(() => t.mapping.read(0, 3 as AccessSize)).toThrow(RangeError);
    expect(() => t.mapping.write(0, 4, 1n)).toThrow(TypeError);
    expect(() => t.mapping.write(0, 8, 1)).toThrow(TypeError);
  });

  test('readBlock and writeBlock move every element at its width', () => {
    for (const width of WIDTHS) {
      const count = 37;
      const off = 5; // unaligned on purpose
      const bytes = new Uint8Array(count * width).map((_, i) => (i * 7 + width) & 0xff);
      t.mapping.writeBlock(off, bytes, width);
      expect(t.bytes(off, count * width)).toEqual(Buffer.from(bytes));
      const typed = t.mapping.readBlock(off, count, width);
      expect(Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength)).toEqual(Buffer.from(bytes));
      expect(typed.length).toBe(count);
      const into = new Uint8Array(count * width);
      expect(t.mapping.readBlock(off, count, width, into)).toBe(into);
      expect(into).toEqual(bytes);
    }
    const words = new Uint32Array([1, 2, 0xffffffff]);
    t.mapping.writeBlock(64, words, 4);
    expect(t.mapping.readBlock(64, 3, 4)).toEqual(words);
    const big = new BigUint64Array([1n, 2n ** 64n - 1n]);
    t.mapping.writeBlock(128, big, 8);
    expect(t.mapping.readBlock(128, 2, 8)).toEqual(big);
    expect(t.mapping.readBlock(0, 0, 4)).toHaveLength(0);
  });

  test('block bounds and types are checked before anything moves', () => {
    const before = t.bytes(0, SIZE);
    expect(() => t.mapping.readBlock(SIZE - 8, 3, 4)).toThrow(RangeError);
    expect(() => t.mapping.readBlock(0, 2 ** 50, 8)).toThrow(RangeError);
    expect(() => t.mapping.writeBlock(SIZE - 4, new Uint32Array(2), 4)).toThrow(/outside the mapping/);
    expect(() => t.mapping.readBlock(0, 4, 4, new Uint32Array(3))).toThrow(/holds 12 bytes, needs 16/);
    expect(() => t.mapping.readBlock(0, 4, 4, new Uint16Array(8))).toThrow(TypeError);
    expect(() => t.mapping.writeBlock(0, new Uint8Array(3), 2)).toThrow(/not a multiple of width 2/);
    expect(() => t.mapping.readBlock(0, 1, 3 as AccessSize)).toThrow(RangeError);
    // An offset past the end names the whole block, not a zero-width access.
    expect(() => t.mapping.readBlock(SIZE + 4, 2, 4)).toThrow(
      new RangeError(
        `mapping.readBlock: offset ${SIZE + 4} count 2 width 4 is outside the mapping (length ${SIZE})`,
      ),
    );
    expect(() => t.mapping.writeBlock(SIZE + 1, new Uint16Array(3), 2)).toThrow(
      new RangeError(
        `mapping.writeBlock: offset ${SIZE + 1} count 3 width 2 is outside the mapping (length ${SIZE})`,
      ),
    );
    expect(t.bytes(0, SIZE)).toEqual(before);
  });

  test('close is idempotent and any use after close throws ECLOSED', () => {
    const m = t.mapping;
    expect(m.closed).toBe(false);
    m.close();
    m.close();
    expect(m.closed).toBe(true);
    const uses: Array<() => unknown> = [
      () => m.read8(0),
      () => m.read16(0),
      () => m.read32(0),
      () => m.read64(0),
      () => m.read64Pair(0, new Uint32Array(2)),
      () => m.write8(0, 1),
      () => m.write16(0, 1),
      () => m.write32(0, 1),
      () => m.write64(0, 1n),
      () => m.write64Pair(0, 1, 1),
      () => m.readBlock(0, 1, 4),
      () => m.writeBlock(0, new Uint8Array(4), 4),
    ];
    for (const use of uses) {
      let error: unknown;
      try {
        use();
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(VfioError);
      expect((error as VfioError).code).toBe('ECLOSED');
    }
  });

  test('Symbol.dispose closes', () => {
    const fd = memfd('dispose', 4096);
    let kept: Mapping | undefined;
    {
      using m = Mapping.fromFd(fd, 0, 4096);
      kept = m;
      m.write32(0, 1);
    }
    expect(kept.closed).toBe(true);
    fs.closeSync(fd);
  });
});

describe('Mapping.fromFd', () => {
  test('many mappings at once each reach their own memory', () => {
    const fds = [0, 1, 2, 3].map((i) => memfd(`many-${i}`, 4096));
    const maps = fds.map((fd) => Mapping.fromFd(fd, 0, 4096));
    maps.forEach((m, i) => m.write64(8, BigInt(i) * 0x1111_1111_1111_1111n));
    maps[1]!.close();
    const again = Mapping.fromFd(fds[1]!, 0, 4096);
    expect(maps.filter((_, i) => i !== 1).map((m) => m.read64(8))).toEqual([
      0n,
      0x2222_2222_2222_2222n,
      0x3333_3333_3333_3333n,
    ]);
    expect(again.read64(8)).toBe(0x1111_1111_1111_1111n);
    expect(() => maps[1]!.read64(8)).toThrow(VfioError);
    [...maps, again].forEach((m) => m.close());
    fds.forEach((fd) => fs.closeSync(fd));
  });

  test('maps from a non-page-aligned offset', () => {
    const fd = memfd('offset', 3 * 4096);
    const whole = Mapping.fromFd(fd, 0, 3 * 4096);
    whole.write32(4096 + 100, 0x11223344);
    const part = Mapping.fromFd(fd, 4096 + 98, 10);
    expect(part.length).toBe(10);
    expect(part.read32(2)).toBe(0x11223344);
    expect(() => part.read32(7)).toThrow(RangeError);
    part.close();
    whole.close();
    fs.closeSync(fd);
  });

  test('offsets above 4 GiB work, and the next small offset is not mistaken for a large one', () => {
    const size = 2 ** 32 + 8192; // sparse: only the pages touched below use memory
    const fd = memfd('large', size);
    const m = Mapping.fromFd(fd, 0, size);
    m.write32(2 ** 32 + 8, 0x600d_f00d);
    m.write32(8, 0x1111_2222);
    expect(m.read32(2 ** 32 + 8)).toBe(0x600d_f00d);
    expect(m.read32(8)).toBe(0x1111_2222);
    const viaFd = Buffer.alloc(4);
    fs.readSync(fd, viaFd, 0, 4, 2 ** 32 + 8);
    expect(viaFd.readUInt32LE(0)).toBe(0x600d_f00d);
    expect(() => m.read64(size - 4)).toThrow(new RegExp(`offset ${size - 4} width 8 .*length ${size}`));
    m.close();
    fs.closeSync(fd);
  });

  test('a read-only mapping refuses stores with a TypeError and reads fine', () => {
    const fd = memfd('ro', 4096);
    const rw = Mapping.fromFd(fd, 0, 4096);
    rw.write32(0, 42);
    const ro = Mapping.fromFd(fd, 0, 4096, { writable: false });
    expect(ro.read32(0)).toBe(42);
    expect(() => ro.write32(0, 1)).toThrow(/read-only/);
    expect(() => ro.writeBlock(0, new Uint8Array(4), 1)).toThrow(TypeError);
    expect(rw.read32(0)).toBe(42);
    ro.close();
    rw.close();
    fs.closeSync(fd);
  });

  test('says whether it maps device memory: only when told, as Device.map tells it of a BAR', () => {
    const fd = memfd('device-memory', 4096);
    using plain = Mapping.fromFd(fd, 0, 4096);
    using bar = Mapping.fromFd(fd, 0, 4096, { deviceMemory: true });
    expect([plain.deviceMemory, bar.deviceMemory]).toEqual([false, true]);
    expect(() => Mapping.fromFd(fd, 0, 4096, { deviceMemory: 1 as unknown as boolean })).toThrow(
      /deviceMemory must be a boolean/,
    );
    fs.closeSync(fd);
  });

  test('mmap failures are VfioErrors with errno and hint', () => {
    let error: unknown;
    try {
      Mapping.fromFd(999_999, 0, 4096);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VfioError);
    expect((error as VfioError).code).toBe('EBADF');
    expect((error as VfioError).errno).toBe(-9);
    expect((error as VfioError).op).toBe('mmap');

    // A writable MAP_SHARED mapping of a read-only fd is refused with EACCES.
    const dir = fs.mkdtempSync('/tmp/vfio-bridge-ro-');
    fs.writeFileSync(`${dir}/f`, Buffer.alloc(4096));
    const fd = fs.openSync(`${dir}/f`, 'r');
    error = undefined;
    try {
      Mapping.fromFd(fd, 0, 4096, { path: '/dev/vfio/7', bdf: '0000:00:03.0' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VfioError);
    expect((error as VfioError).code).toBe('EACCES');
    expect((error as VfioError).hint).toMatch(/read-only/);
    expect((error as VfioError).bdf).toBe('0000:00:03.0');
    expect((error as VfioError).path).toBe('/dev/vfio/7');
    expect((error as VfioError).message).toMatch(/^mmap failed: Permission denied/);
    // Read-only works.
    const ro = Mapping.fromFd(fd, 0, 4096, { writable: false });
    expect(ro.read64(0)).toBe(0n);
    ro.close();
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true });
  });

  test('bad arguments', () => {
    expect(() => Mapping.fromFd(-1, 0, 4096)).toThrow(RangeError);
    expect(() => Mapping.fromFd(3, 0, 0)).toThrow(RangeError);
    expect(() => Mapping.fromFd(3, 0.5, 4096)).toThrow(RangeError);
    expect(() => Mapping.fromFd('3' as unknown as number, 0, 4096)).toThrow(TypeError);
    expect(() => memfd('x', -1)).toThrow(RangeError);
    expect(() => memfd(1 as unknown as string, 1)).toThrow(TypeError);
  });
});
