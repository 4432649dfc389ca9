// rtl8139: an I/O-port BAR reachable only through the device fd, and a sub-page MMIO BAR that
// vfio-pci still lets us mmap because the rest of its page is reserved for it.
import { PAGE_SIZE, VfioError } from '../../lib';
import { describeDevice, openDevice, type Opened } from './hil';

const BAR_IO = 0;
const BAR_MMIO = 1;

describeDevice('rtl8139', 'I/O-port BAR and sub-page MMIO BAR', (bdf) => {
  let o: Opened;
  beforeAll(() => {
    o = openDevice(bdf());
  });
  afterAll(() => o?.close());

  test('BAR0 is a 256-byte I/O-port region that cannot be mapped', () => {
    const info = o.device.regionInfo(BAR_IO);
    expect(info.size).toBe(256);
    expect(info.mappable).toBe(false);
    expect(info.readable && info.writable).toBe(true);
    expect(() => o.device.map(BAR_IO, 0, 256)).toThrow(VfioError);
  });

  test('the station address reads the same through I/O ports at every width', () => {
    const mac = Array.from({ length: 6 }, (_, i) => o.device.read(BAR_IO, i, 1) as number);
    // A real unicast address: not all zero, the group bit clear.
    expect(mac.some((b) => b !== 0)).toBe(true);
    expect(mac[0] & 1).toBe(0);
    const w0 = o.device.read(BAR_IO, 0, 4) as number;
    expect(w0).toBe((mac[0] | (mac[1] << 8) | (mac[2] << 16) | (mac[3] << 24)) >>> 0);
    expect(o.device.read(BAR_IO, 4, 2)).toBe(mac[4] | (mac[5] << 8));
    expect(Array.from(o.device.readBlock(BAR_IO, 0, 6))).toEqual(mac);
  });

  test('an I/O-port write reaches the device (the multicast filter register is read/write)', () => {
    const old = o.device.read(BAR_IO, 0x08, 4) as number;
    o.device.write(BAR_IO, 0x08, 4, 0xa5a55a5a);
    expect(o.device.read(BAR_IO, 0x08, 4)).toBe(0xa5a55a5a);
    expect(o.device.read(BAR_IO, 0x09, 1)).toBe(0x5a);
    o.device.write(BAR_IO, 0x08, 4, old);
    expect(o.device.read(BAR_IO, 0x08, 4)).toBe(old);
  });

  test('BAR1 is a 256-byte sub-page MMIO region that maps and mirrors the I/O registers', () => {
    const info = o.device.regionInfo(BAR_MMIO);
    expect(info.size).toBe(256);
    expect(info.mappable).toBe(true);
    const m = o.device.map(BAR_MMIO, 0, 256);
    try {
      expect(m.length).toBe(256);
      for (const off of [0, 4, 8, 12]) {
        expect(m.read32(off)).toBe(o.device.read(BAR_IO, off, 4));
      }
      m.write32(0x0c, 0x0badf00d);
      expect(o.device.read(BAR_IO, 0x0c, 4)).toBe(0x0badf00d);
      expect(m.read8(0x0d)).toBe(0xf0);
      m.write32(0x0c, 0);
      // The mapping covers the BAR, not the page it sits in.
      expect(() => m.read32(256)).toThrow(RangeError);
      expect(() => m.read8(255)).not.toThrow();
    } finally {
      m.close();
    }
  });

  test('the sub-page BAR maps as its whole page, as the kernel allows, and no further', () => {
    // vfio-pci reserves the rest of a sub-page BAR's page, so the page is the mmap limit: this is
    // what lets a VMM hand the BAR to KVM as one page.
    const page = o.device.map(BAR_MMIO, 0, PAGE_SIZE);
    try {
      expect(page.length).toBe(PAGE_SIZE);
      for (const off of [0, 4, 8, 12]) expect(page.read32(off)).toBe(o.device.read(BAR_IO, off, 4));
    } finally {
      page.close();
    }
    const tail = o.device.map(BAR_MMIO, 128, PAGE_SIZE - 128);
    tail.close();
    expect(() => o.device.map(BAR_MMIO, 0, PAGE_SIZE + 1)).toThrow(
      new RangeError(`map: offset 0 width ${PAGE_SIZE + 1} is outside region 1 (size ${PAGE_SIZE})`),
    );
    expect(() => o.device.map(BAR_MMIO, 128, PAGE_SIZE - 127)).toThrow(RangeError);
  });
});
