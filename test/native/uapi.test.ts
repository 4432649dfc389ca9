import {
  parseDeviceInfo,
  parseIommuInfo,
  parseIrqInfo,
  parseRegionInfo,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../../lib/vfio/uapi';
import { caught } from './helpers';

/** Little-endian struct builder for synthetic kernel replies. */
class Writer {
  readonly buf: Buffer;
  constructor(size: number) {
    this.buf = Buffer.alloc(size);
  }
  u16(at: number, v: number) {
    this.buf.writeUInt16LE(v, at);
    return this;
  }
  u32(at: number, v: number) {
    this.buf.writeUInt32LE(v, at);
    return this;
  }
  u64(at: number, v: bigint) {
    this.buf.writeBigUInt64LE(v, at);
    return this;
  }
  cap(at: number, id: number, version: number, next: number) {
    return this.u16(at, id)
      .u16(at + 2, version)
      .u32(at + 4, next);
  }
}

describe('region info', () => {
  const RW_MMAP_CAPS =
    VFIO_REGION_INFO_FLAG_READ |
    VFIO_REGION_INFO_FLAG_WRITE |
    VFIO_REGION_INFO_FLAG_MMAP |
    VFIO_REGION_INFO_FLAG_CAPS;

  test('a BAR with sparse mmap, type, msix-mappable and an unknown capability', () => {
    // 32-byte header; sparse @32 (2 areas, 48 bytes); type @80 (16); msix @96 (8); unknown @104 (8).
    const w = new Writer(112)
      .u32(0, 112)
      .u32(4, RW_MMAP_CAPS)
      .u32(8, 2)
      .u32(12, 32)
      .u64(16, 0x4000n)
      .u64(24, 2n << 40n);
    w.cap(32, 1, 1, 80).u32(40, 2).u64(48, 0n).u64(56, 0x1000n).u64(64, 0x3000n).u64(72, 0x1000n);
    w.cap(80, 2, 1, 96).u32(88, 0x8086_0000).u32(92, 3);
    w.cap(96, 3, 1, 104);
    w.cap(104, 4, 2, 0);
    expect(parseRegionInfo(w.buf)).toEqual({
      index: 2,
      flags: RW_MMAP_CAPS,
      readable: true,
      writable: true,
      mappable: true,
      size: 0x4000,
      offset: 2 * 2 ** 40,
      caps: [
        {
          kind: 'sparse-mmap',
          areas: [
            { offset: 0, size: 0x1000 },
            { offset: 0x3000, size: 0x1000 },
          ],
        },
        { kind: 'type', type: 0x8086_0000, subtype: 3 },
        { kind: 'msix-mappable' },
        { kind: 'unknown', id: 4, version: 2 },
      ],
    });
  });

  test('the chain is followed by offset, in whatever order the kernel laid it out', () => {
    const w = new Writer(56).u32(0, 56).u32(4, VFIO_REGION_INFO_FLAG_CAPS).u32(12, 48);
    w.cap(48, 3, 1, 32);
    w.cap(32, 2, 1, 0).u32(40, 1).u32(44, 2);
    expect(parseRegionInfo(w.buf).caps).toEqual([
      { kind: 'msix-mappable' },
      { kind: 'type', type: 1, subtype: 2 },
    ]);
  });

  test('no CAPS flag means no capabilities, whatever cap_offset says', () => {
    const w = new Writer(32).u32(4, VFIO_REGION_INFO_FLAG_READ).u32(12, 99);
    expect(parseRegionInfo(w.buf).caps).toEqual([]);
  });

  test('malformed chains are EPROTO errors, never loops or out-of-bounds reads', () => {
    const loop = new Writer(48).u32(4, VFIO_REGION_INFO_FLAG_CAPS).u32(12, 32);
    loop.cap(32, 3, 1, 40).cap(40, 3, 1, 32);
    expect(caught(() => parseRegionInfo(loop.buf))).toMatchObject({ code: 'EPROTO' });
    expect(caught(() => parseRegionInfo(loop.buf)).message).toMatch(/loops/);

    const outside = new Writer(40).u32(4, VFIO_REGION_INFO_FLAG_CAPS).u32(12, 36);
    expect(caught(() => parseRegionInfo(outside.buf)).message).toMatch(/outside/);

    const intoHeader = new Writer(48).u32(4, VFIO_REGION_INFO_FLAG_CAPS).u32(12, 8);
    expect(caught(() => parseRegionInfo(intoHeader.buf)).code).toBe('EPROTO');

    const tooManyAreas = new Writer(48).u32(4, VFIO_REGION_INFO_FLAG_CAPS).u32(12, 32);
    tooManyAreas.cap(32, 1, 1, 0).u32(40, 1000);
    expect(caught(() => parseRegionInfo(tooManyAreas.buf)).message).toMatch(/1000 sparse mmap areas/);

    expect(caught(() => parseRegionInfo(Buffer.alloc(16))).code).toBe('EPROTO');
    const huge = new Writer(32).u64(16, 1n << 60n);
    expect(caught(() => parseRegionInfo(huge.buf)).message).toMatch(/exceeds 2\^53/);
  });
});

describe('device, IRQ and IOMMU info', () => {
  test('device info flags', () => {
    const w = new Writer(20).u32(0, 20).u32(4, 0b11).u32(8, 9).u32(12, 5);
    expect(parseDeviceInfo(w.buf)).toEqual({ flags: 3, numRegions: 9, numIrqs: 5, pci: true, reset: true });
  });

  test('IRQ info flags', () => {
    const w = new Writer(16).u32(0, 16).u32(4, 0b1011).u32(8, 2).u32(12, 64);
    expect(parseIrqInfo(w.buf)).toEqual({
      index: 2,
      flags: 0b1011,
      count: 64,
      eventfd: true,
      maskable: true,
      automasked: false,
      noresize: true,
    });
  });

  test('IOMMU info with IOVA ranges, DMA avail and the migration capability', () => {
    // 24-byte header; iova @24 (2 ranges: 48 bytes); migration @72 (32); dma avail @104 (12, padded to 16).
    const w = new Writer(120).u32(0, 120).u32(4, 0b11).u64(8, 0x40201000n).u32(16, 24);
    w.cap(24, 1, 1, 72)
      .u32(32, 2)
      .u64(40, 0n)
      .u64(48, 0xfedfffffn)
      .u64(56, 0xfef00000n)
      .u64(64, (1n << 48n) - 1n);
    w.cap(72, 2, 1, 104).u32(80, 0).u64(88, 0x1000n).u64(96, 0x10000000n);
    w.cap(104, 3, 1, 0).u32(112, 65535);
    expect(parseIommuInfo(w.buf)).toEqual({
      flags: 3,
      iovaPgsizes: 0x40201000n,
      caps: [
        {
          kind: 'iova-ranges',
          ranges: [
            { start: 0n, end: 0xfedfffffn },
            { start: 0xfef00000n, end: (1n << 48n) - 1n },
          ],
        },
        { kind: 'migration', flags: 0, pgsizeBitmap: 0x1000n, maxDirtyBitmapSize: 0x10000000n },
        { kind: 'dma-avail', avail: 65535 },
      ],
    });
  });

  test('IOMMU info without the PGSIZES flag reports 0 page sizes', () => {
    const w = new Writer(24).u32(0, 24).u64(8, 0x1000n);
    expect(parseIommuInfo(w.buf)).toEqual({ flags: 0, iovaPgsizes: 0n, caps: [] });
  });
});
