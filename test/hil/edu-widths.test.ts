// Width sensitivity on QEMU's edu device: below 0x80 it accepts only 4-byte accesses, so a wrong
// width, a split access or a merged one shows up as a wrong value (QEMU docs/specs/edu.rst).
import { VfioError, type Mapping } from '../../lib';
import { CONFIG, describeDevice, openDevice, type Opened } from './hil';

const ID = 0x010000ed;
const BAR0 = 0;

describeDevice('edu', 'width sensitivity', (bdf) => {
  let o: Opened;
  let m: Mapping;
  beforeAll(() => {
    o = openDevice(bdf());
    m = o.device.map(BAR0, 0, o.device.regionInfo(BAR0).size);
  });
  afterAll(() => {
    m?.close();
    o?.close();
  });

  test('BAR0 is a 1 MiB mappable MMIO region', () => {
    const info = o.device.regionInfo(BAR0);
    expect(info.size).toBe(1 << 20);
    expect(info.mappable).toBe(true);
    expect(m.length).toBe(1 << 20);
  });

  test('a 4-byte read of 0x00 through the mapping is the ID register', () => {
    expect(m.read32(0)).toBe(ID);
    expect(m.read(0, 4)).toBe(ID);
    expect(Array.from(m.readBlock(0, 1, 4))).toEqual([ID]);
  });

  test('narrower or wider reads of 0x00 through the mapping are not the ID', () => {
    // The device rejects them as a whole: no byte of the ID leaks out of a 1- or 2-byte read,
    // and an 8-byte read is one access the device answers with all ones, not two dwords.
    expect(m.read8(0)).not.toBe(0xed);
    expect(m.read16(0)).not.toBe(0x00ed);
    expect(m.read(0, 1)).toBe(m.read8(0));
    expect(m.read64(0)).toBe(0xffffffffffffffffn);
    const pair = new Uint32Array(2);
    m.read64Pair(0, pair);
    expect(Array.from(pair)).toEqual([0xffffffff, 0xffffffff]);
    expect(Array.from(m.readBlock(0, 4, 1))).not.toContain(0xed);
  });

  test('0x04 inverts a 4-byte write; 1-, 2- and unaligned 8-byte writes are dropped', () => {
    m.write32(4, 0x12345678);
    expect(m.read32(4)).toBe(~0x12345678 >>> 0);
    m.write8(4, 0xaa);
    m.write16(4, 0xbbbb);
    m.write(4, 1, 0xcc);
    expect(m.read32(4)).toBe(~0x12345678 >>> 0);
    m.write(4, 4, 0x0f0f0f0f);
    expect(m.read(4, 4)).toBe(0xf0f0f0f0);
  });

  test('8-byte DMA registers keep all 64 bits of one access', () => {
    const v = 0x1122334455667788n;
    m.write64(0x80, v);
    expect(m.read64(0x80)).toBe(v);
    expect(m.read32(0x80)).toBe(0x55667788);
    // 0x84 is not a register: a split 8-byte access would have read ones for the high half.
    expect(m.read32(0x84)).toBe(0xffffffff);
    const pair = new Uint32Array(2);
    m.read64Pair(0x80, pair);
    expect(Array.from(pair)).toEqual([0x55667788, 0x11223344]);
    m.write64Pair(0x88, 0x9abcdef0, 0x01234567);
    expect(m.read64(0x88)).toBe(0x012345679abcdef0n);
    m.write(0x90, 8, 0x4000n);
    expect(m.read(0x90, 8)).toBe(0x4000n);
    m.writeBlock(0x80, new BigUint64Array([1n, 2n]), 8);
    expect(Array.from(m.readBlock(0x80, 2, 8) as BigUint64Array)).toEqual([1n, 2n]);
  });

  test('the factorial unit computes through the mapping', async () => {
    m.write32(0x08, 10);
    for (let i = 0; i < 1000 && (m.read32(0x20) & 1) !== 0; i++) {
      await new Promise((r) => setTimeout(r, 1));
    }
    expect(m.read32(0x20) & 1).toBe(0);
    expect(m.read32(0x08)).toBe(3628800);
  });

  test('the fd path keeps widths too', () => {
    expect(o.device.read(BAR0, 0, 4)).toBe(ID);
    expect(o.device.read(BAR0, 0, 1)).not.toBe(0xed);
    expect(o.device.read(BAR0, 0, 2)).not.toBe(0x00ed);
    o.device.write(BAR0, 4, 4, 0x0000ffff);
    expect(o.device.read(BAR0, 4, 4)).toBe(0xffff0000);
    o.device.write(BAR0, 4, 1, 0x11);
    expect(o.device.read(BAR0, 4, 4)).toBe(0xffff0000);
    o.device.write(BAR0, 0x80, 8, 0xa1b2c3d4e5f60718n);
    expect(o.device.read(BAR0, 0x80, 8)).toBe(0xa1b2c3d4e5f60718n);
    expect(o.device.read(BAR0, 0x80, 4)).toBe(0xe5f60718);
  });

  test('the mapping and the fd agree on every register', () => {
    m.write32(4, 0xdeadbeef);
    m.write64(0x80, 0x1000n);
    m.write64(0x88, 0x40000n);
    m.write64(0x90, 0x20n);
    for (const off of [0x00, 0x04, 0x08, 0x20, 0x24]) {
      expect(o.device.read(BAR0, off, 4)).toBe(m.read32(off));
    }
    for (const off of [0x80, 0x88, 0x90, 0x98]) {
      expect(o.device.read(BAR0, off, 8)).toBe(m.read64(off));
      expect(o.device.read(BAR0, off, 4)).toBe(m.read32(off));
    }
    // A write through the fd is seen through the mapping and the other way round.
    o.device.write(BAR0, 4, 4, 0x01020304);
    expect(m.read32(4)).toBe(~0x01020304 >>> 0);
    m.write32(4, 0x0a0b0c0d);
    expect(o.device.read(BAR0, 4, 4)).toBe(~0x0a0b0c0d >>> 0);
  });

  test('the interrupt raise and acknowledge registers behave through the mapping', () => {
    // Interrupts stay disabled at the device (no INTx/MSI set up); only the status bits move.
    m.write32(0x60, 0x100);
    expect(m.read32(0x24) & 0x100).toBe(0x100);
    m.write32(0x64, 0x100);
    expect(m.read32(0x24) & 0x100).toBe(0);
  });

  test('a mapping that starts inside a page addresses the device from its own offset', () => {
    const dma = o.device.map(BAR0, 0x80, 0x20);
    try {
      expect(dma.length).toBe(0x20);
      dma.write64(0, 0xfeedfacecafebeefn);
      expect(m.read64(0x80)).toBe(0xfeedfacecafebeefn);
      expect(dma.read64(8)).toBe(o.device.read(BAR0, 0x88, 8));
      expect(() => dma.read32(0x20)).toThrow(RangeError);
    } finally {
      dma.close();
    }
  });

  test('a device without a reset method refuses reset() with a VfioError', () => {
    // edu has neither FLR nor PM reset, and a root-bus slot cannot be reset on its own.
    expect(o.device.info().reset).toBe(false);
    expect(() => o.device.reset()).toThrow(VfioError);
    expect(m.read32(0)).toBe(ID);
  });

  test('the command register shows memory enabled while the BAR is in use', () => {
    expect((o.device.read(CONFIG, 4, 2) as number) & 2).toBe(2);
  });
});
