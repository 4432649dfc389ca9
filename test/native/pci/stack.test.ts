import { isVfioError, SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { VfioError } from '../../../lib/vfio';
import { e1000eSpec, enableDecode, ivshmemSpec, placeBar, rtl8139Spec } from '../../support/pci-helpers';
import { MemfdVfioDevice } from './memfd-device';

describe('vfio-pci stacks on memfd-backed BARs and native mappings', () => {
  const devices: MemfdVfioDevice[] = [];
  const open = (spec: ReturnType<typeof e1000eSpec>, opts = {}) => {
    const bus = new SystemAddressSpaces();
    const mem = new MemfdVfioDevice(spec);
    devices.push(mem);
    return { bus, mem, dev: VfioPciDevice.open(bus, mem, opts) };
  };
  afterAll(() => devices.forEach((d) => d.close()));

  it('serves trapped-mmap and direct pieces through the native Mapping, coherent with pread', () => {
    const { bus, mem, dev } = open(e1000eSpec());
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    expect(dev.mapinfo().map((r) => r.mapinfo)).toEqual(['emulated', 'trapped-mmap', 'direct']);
    bus.mmioWrite(0xfebf0100, 4, 0xa1b2c3d4);
    bus.mmioWrite(0xfebf0106, 2, 0xbeef);
    bus.mmioWrite(0xfebf2008, 8, 0x0102030405060708n);
    expect(mem.read(3, 0x100, 4)).toBe(0xa1b2c3d4);
    expect(mem.read(3, 0x106, 2)).toBe(0xbeef);
    expect(mem.read(3, 0x2008, 8)).toBe(0x0102030405060708n);
    mem.write(3, 0x200, 1, 0x7e);
    expect(bus.mmioRead(0xfebf0200, 1)).toBe(0x7e);
    // The emulated table is not the device's.
    bus.mmioWrite(0xfebf0008, 4, 0x4041);
    expect(mem.read(3, 0x8, 4)).toBe(0);
    expect(dev.bars[3]?.mmaps[0].memory.constructor.name).toBe('Mapping');
  });

  it('expands a sub-page BAR over a page-long native mapping and shrinks it back', () => {
    const { bus, mem, dev } = open(rtl8139Spec());
    placeBar(dev, 0, 0xc000);
    placeBar(dev, 1, 0xfebf1000);
    enableDecode(dev);
    expect(dev.bars[1]?.expandable).toBe(true);
    expect(
      dev
        .mapinfo()
        .filter((r) => r.bar === 1)
        .map((r) => [r.size, r.mapinfo]),
    ).toEqual([[0x1000, 'direct']]);
    bus.mmioWrite(0xfebf1010, 4, 0x11223344);
    expect(mem.read(1, 0x10, 4)).toBe(0x11223344);
    placeBar(dev, 1, 0xfebf1100);
    expect(
      dev
        .mapinfo()
        .filter((r) => r.bar === 1)
        .map((r) => [r.size, r.mapinfo]),
    ).toEqual([[0x100, 'trapped-mmap']]);
    expect(bus.mmioRead(0xfebf1110, 4)).toBe(0x11223344);
    // The I/O BAR goes through pread/pwrite.
    bus.pioWrite(0xc000, 2, 0x5aa5);
    expect(mem.read(0, 0, 2)).toBe(0x5aa5);
  });

  it('runs the RTL8168 window quirk over real pread/pwrite', () => {
    const { bus, mem, dev } = open(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    placeBar(dev, 2, 0x8_0000_0000);
    enableDecode(dev);
    bus.mmioWrite(0x8_0000_0070, 4, 0xcafef00d);
    bus.mmioWrite(0x8_0000_0074, 4, 0x00020000);
    bus.mmioWrite(0x8_0000_006c, 4, 0x01020304);
    bus.mmioWrite(0x8_0000_0078, 4, 0x05060708);
    expect([0x6c, 0x70, 0x74, 0x78].map((o) => mem.read(2, o, 4))).toEqual([
      0x01020304, 0xcafef00d, 0x00020000, 0x05060708,
    ]);
    bus.mmioWrite(0x8_0000_0074, 4, 0x80010000);
    expect(mem.read(2, 0x74, 4)).toBe(0x00020000);
    expect(dev.dump(2, 0x68, 0x18)).toBe(
      '0000000800000068: 0x00000000 0x01020304 0xcafef00d 0x00010000\n0000000800000078: 0x05060708 0x00000000',
    );
  });

  it('closes every native mapping with the device', () => {
    const { bus, mem, dev } = open(e1000eSpec());
    dev.close();
    expect(mem.mappings.length).toBeGreaterThan(0);
    expect(mem.mappings.every((m) => m.closed)).toBe(true);
    bus.close();
  });
});

describe("lib/pci's recognition of lib/vfio errors", () => {
  it('matches the real VfioError, not programming errors', () => {
    const e = new VfioError({ message: 'pread failed', code: 'EIO', errno: 5, op: 'pread' });
    expect(isVfioError(e)).toBe(true);
    expect(isVfioError(new RangeError('x'))).toBe(false);
    expect(isVfioError(new TypeError('x'))).toBe(false);
    expect(isVfioError({ name: 'VfioError', code: 'EIO' })).toBe(false);
  });
});
