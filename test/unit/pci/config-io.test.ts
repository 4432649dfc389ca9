import { PciBus, pciConfigIo, PCI_CONFIG_IO_PORT, VfioPciDevice } from '../../../lib/pci';
import { FakeVfioDevice } from './fake-device';
import { rtl8139Spec } from './helpers';

function setup() {
  const bus = new PciBus();
  const dev = VfioPciDevice.open(bus, new FakeVfioDevice(rtl8139Spec()));
  const writes: [number, number, number][] = [];
  bus.io.root.addSubregion(
    pciConfigIo(new Map([[4, dev]]), (_d, offset, size, value) => writes.push([offset, size, value])),
    PCI_CONFIG_IO_PORT,
  );
  const address = (slot: number, reg: number, enable = true): void =>
    bus.pioWrite(0xcf8, 4, ((enable ? 0x8000_0000 : 0) | (slot << 11) | reg) >>> 0);
  return { bus, dev, writes, address };
}

describe('pciConfigIo (configuration mechanism #1)', () => {
  it('reads back CONFIG_ADDRESS and serves CONFIG_DATA at every byte lane', () => {
    const { bus, address } = setup();
    address(4, 0x00);
    expect(bus.pioRead(0xcf8, 4)).toBe((0x8000_0000 | (4 << 11)) >>> 0);
    expect(bus.pioRead(0xcfc, 4)).toBe(0x813910ec);
    expect(bus.pioRead(0xcfe, 2)).toBe(0x8139);
    expect(bus.pioRead(0xcfd, 1)).toBe(0x10);
  });

  it('reads all-ones for an empty slot, another bus or function, or the enable bit clear', () => {
    const { bus, address } = setup();
    address(5, 0);
    expect(bus.pioRead(0xcfc, 4)).toBe(0xffffffff);
    address(4, 0, false);
    expect(bus.pioRead(0xcfc, 2)).toBe(0xffff);
    bus.pioWrite(0xcf8, 4, (0x8000_0000 | (1 << 16) | (4 << 11)) >>> 0);
    expect(bus.pioRead(0xcfc, 4)).toBe(0xffffffff);
  });

  it('writes reach the device, move its BARs, and are heard by onWrite', () => {
    const { bus, dev, writes, address } = setup();
    address(4, 0x14);
    bus.pioWrite(0xcfc, 4, 0xe0000800);
    address(4, 0x04);
    bus.pioWrite(0xcfc, 2, 0x0002);
    expect(dev.bars[1]?.address).toBe(0xe0000800);
    expect(writes).toEqual([
      [0x14, 4, 0xe0000800],
      [0x04, 2, 0x0002],
    ]);
    address(7, 0x04);
    bus.pioWrite(0xcfc, 4, 0);
    expect(writes).toHaveLength(2);
  });
});
