// A mediated device shaped as the kernel's mtty sample presents itself through VFIO: named by a UUID,
// a configuration region of 255 bytes with no capability list, one 8-byte I/O BAR that cannot be
// mapped, no ROM. The VfioPciDevice stack builds on it as on a PCI function.
import { SystemAddressSpaces, VfioPciDevice, type VfioDeviceLike } from '../../../lib/pci';
import type { AccessSize } from '../../../lib/memory';
import type { RegionInfo } from '../../../lib/vfio';

const UUID = '83b8f4f2-509f-482f-bc1e-e6bfe0fa1001';

function mttyShaped(): VfioDeviceLike & { io: { offset: number; size: number; isWrite: boolean }[] } {
  const config = new Uint8Array(0xff);
  const v = new DataView(config.buffer);
  v.setUint32(0x00, 0x32534348, true);
  v.setUint16(0x04, 0x0001, true);
  v.setUint16(0x06, 0x0200, true);
  v.setUint32(0x08, 0x07000210, true);
  v.setUint32(0x10, 0x1, true);
  config[0x3d] = 1;
  const sizes = [8, 0, 0, 0, 0, 0, 0, 0xff];
  const regs = new Uint8Array(8);
  const io: { offset: number; size: number; isWrite: boolean }[] = [];
  return {
    bdf: UUID,
    io,
    regionInfo(index: number): RegionInfo {
      return {
        index,
        size: sizes[index] ?? 0,
        offset: index * 2 ** 40,
        flags: 3,
        readable: true,
        writable: true,
        mappable: false,
        caps: [],
      } as unknown as RegionInfo;
    },
    read(region: number, offset: number, size: AccessSize): number | bigint {
      if (region === 7) {
        let out = 0;
        for (let i = size - 1; i >= 0; i--) out = out * 256 + (config[offset + i] ?? 0);
        return out;
      }
      io.push({ offset, size, isWrite: false });
      return regs[offset]!;
    },
    write(region: number, offset: number, size: AccessSize, value: number | bigint): void {
      if (region === 7) {
        if (offset === 0x10) v.setUint32(0x10, (Number(value) & ~7) | 1, true);
        return;
      }
      io.push({ offset, size, isWrite: true });
      regs[offset] = Number(value);
    },
    map(): never {
      throw new Error('mtty regions cannot be mapped');
    },
  };
}

test('a 255-byte config space, an I/O BAR through the fd, the UUID as its name', () => {
  const bus = new SystemAddressSpaces();
  const d = mttyShaped();
  const dev = VfioPciDevice.open(bus, d);
  expect(dev.bdf).toBe(UUID);
  expect(dev.configSize).toBe(0xff);
  expect([dev.vendorId, dev.deviceId]).toEqual([0x4348, 0x3253]);
  expect(dev.capabilities).toEqual([]);
  expect(dev.bars[0]).toMatchObject({ type: 'io', size: 8 });
  expect(dev.bars.slice(1)).toEqual([null, null, null, null, null]);
  expect(dev.rom).toBeNull();
  expect(dev.configRead(0xfc, 4) >>> 24).toBe(0xff); // past the 255 bytes reads as ones
  dev.configWrite(0x10, 4, 0xc000);
  dev.configWrite(0x04, 2, 0x1);
  bus.pioWrite(0xc007, 1, 0x5a);
  expect(bus.pioRead(0xc007, 1)).toBe(0x5a);
  expect(d.io).toEqual([
    { offset: 7, size: 1, isWrite: true },
    { offset: 7, size: 1, isWrite: false },
  ]);
  expect(dev.mapinfo().map((r) => [r.name, r.mapinfo])).toEqual([[`${UUID} BAR 0`, 'trapped-fd']]);
  bus.close();
});
