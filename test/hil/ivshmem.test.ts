// ivshmem-plain: BAR2 is shared memory backed by a file on the machine running QEMU. Every byte
// written through the mapping, at every width and at unaligned offsets, must appear in that file.
import * as fs from 'node:fs';
import type { AccessSize, Mapping } from '../../lib';
import { describeDevice, ivshmemFile, openDevice, testNeeding, type Opened } from './hil';

const BAR2 = 2;
const WIDTHS: AccessSize[] = [1, 2, 4, 8];

function fileBytes(offset: number, length: number): Buffer {
  // A fresh open and pread per check: 9p in the lab guest must not serve a cached page.
  const fd = fs.openSync(ivshmemFile as string, 'r');
  try {
    const out = Buffer.alloc(length);
    expect(fs.readSync(fd, out, 0, length, offset)).toBe(length);
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

function le(value: number | bigint, size: AccessSize): Buffer {
  const b = Buffer.alloc(size);
  if (size === 8) b.writeBigUInt64LE(value as bigint);
  else b.writeUIntLE(value as number, 0, size);
  return b;
}

function pattern(size: AccessSize, seed: number): number | bigint {
  if (size === 8) return (BigInt(0x8070605 + seed) << 32n) | BigInt(0xf0e0d0c0 - seed);
  return (0xa1b2c3d4 + seed * 0x01010101) % 2 ** (8 * size);
}

describeDevice('ivshmem', 'BAR2 shared memory', (bdf) => {
  let o: Opened;
  let m: Mapping;
  beforeAll(() => {
    o = openDevice(bdf());
    m = o.device.map(BAR2, 0, o.device.regionInfo(BAR2).size);
  });
  afterAll(() => {
    m?.close();
    o?.close();
  });

  test('BAR2 is a mappable power-of-two region; BAR0 holds the 256-byte registers', () => {
    const info = o.device.regionInfo(BAR2);
    expect(info.mappable).toBe(true);
    expect(info.size & (info.size - 1)).toBe(0);
    expect(info.size).toBeGreaterThanOrEqual(4096);
    expect(o.device.regionInfo(0).size).toBe(256);
  });

  test('every width at aligned and unaligned offsets reads back through the mapping and the fd', () => {
    let seed = 0;
    for (const size of WIDTHS) {
      for (const off of [0x1000, 0x1001, 0x1002, 0x1003, 0x1005, 0x1007, 0x1ffd]) {
        const v = pattern(size, seed++);
        m.write(off, size, v);
        expect(m.read(off, size)).toBe(v);
        expect(o.device.read(BAR2, off, size)).toBe(v);
      }
    }
  });

  test('a mapping of a window deep in BAR2 sees the same bytes as the whole-BAR mapping', () => {
    const w = o.device.map(BAR2, 0x7003, 0x2001);
    try {
      w.write32(0, 0x11223344);
      expect(m.read32(0x7003)).toBe(0x11223344);
      m.write16(0x9002, 0xabcd);
      expect(w.read16(0x1fff)).toBe(0xabcd);
      expect(() => w.read16(0x2000)).toThrow(RangeError);
    } finally {
      w.close();
    }
  });

  const fileTest = testNeeding(ivshmemFile ? null : 'VFIO_BRIDGE_HIL_IVSHMEM_FILE is not set');

  fileTest(`bytes written at every width and unaligned offset appear in the backing file`, () => {
    let seed = 0;
    for (const size of WIDTHS) {
      for (let off = 0x2000 + size * 64; off < 0x2000 + size * 64 + 9; off++) {
        // Clear the neighbourhood first so a wider or misplaced store shows up as a stray byte.
        m.writeBlock(off - 8, new Uint8Array(24), 1);
        const v = pattern(size, seed++);
        m.write(off, size, v);
        const expected = Buffer.concat([Buffer.alloc(8), le(v, size), Buffer.alloc(16 - size)]);
        expect(fileBytes(off - 8, 24)).toEqual(expected);
      }
    }
    m.write8(0x3000, 0x5a);
    m.write16(0x3001, 0x1234);
    m.write32(0x3003, 0x89abcdef);
    m.write64(0x3007, 0x0102030405060708n);
    m.write64Pair(0x300f, 0x11223344, 0x55667788);
    expect(fileBytes(0x3000, 0x17)).toEqual(
      Buffer.from('5a3412efcdab89080706050403020144332211887766' + '55', 'hex'),
    );
  });

  fileTest(`block writes at each element width land in the backing file`, () => {
    const src8 = Uint8Array.from({ length: 37 }, (_, i) => (i * 7 + 3) & 0xff);
    m.writeBlock(0x4001, src8, 1);
    expect(fileBytes(0x4001, 37)).toEqual(Buffer.from(src8));
    const src16 = Uint16Array.from({ length: 9 }, (_, i) => 0x1111 * (i + 1));
    m.writeBlock(0x4100, src16, 2);
    expect(fileBytes(0x4100, 18)).toEqual(Buffer.from(src16.buffer));
    const src32 = Uint32Array.from({ length: 5 }, (_, i) => 0x01020304 * (i + 1));
    m.writeBlock(0x4200, src32, 4);
    expect(fileBytes(0x4200, 20)).toEqual(Buffer.from(src32.buffer));
    const src64 = BigUint64Array.from({ length: 3 }, (_, i) => 0x0102030405060708n * BigInt(i + 1));
    m.writeBlock(0x4300, src64, 8);
    expect(fileBytes(0x4300, 24)).toEqual(Buffer.from(src64.buffer));
    expect(Array.from(m.readBlock(0x4300, 3, 8) as BigUint64Array)).toEqual(Array.from(src64));
  });

  fileTest(`fd writes land in the backing file too`, () => {
    o.device.write(BAR2, 0x5003, 4, 0xcafef00d);
    expect(fileBytes(0x5003, 4)).toEqual(le(0xcafef00d, 4));
    o.device.writeBlock(BAR2, 0x5101, Buffer.from('vfio-bridge'));
    expect(fileBytes(0x5101, 11).toString()).toBe('vfio-bridge');
    expect(m.readBlock(0x5101, 11, 1)).toEqual(new Uint8Array(Buffer.from('vfio-bridge')));
  });
});
