// The expansion ROM (rom.ts).
import { e1000eSpec, enableDecode, openFake } from '../../support/pci-helpers';

describe('expansion ROM', () => {
  it('is read through the fd when enabled and drops writes', () => {
    const rom = new Uint8Array(0x800);
    rom.set([0x55, 0xaa, 0x04]);
    const spec = { ...e1000eSpec(), rom };
    const { bus, fake, dev } = openFake(spec);
    expect(dev.rom?.region.name).toBe('vfio[0000:00:05.0].rom');
    dev.configWrite(0x30, 4, 0xffffffff);
    expect(dev.configRead(0x30, 4)).toBe(0xfffff801);
    dev.configWrite(0x30, 4, 0xfeb80000);
    enableDecode(dev);
    expect(dev.rom?.address).toBeNull();
    dev.configWrite(0x30, 4, 0xfeb80001);
    expect(dev.rom?.address).toBe(0xfeb80000);
    expect(bus.mmioRead(0xfeb80000, 2)).toBe(0xaa55);
    bus.mmioWrite(0xfeb80000, 1, 0);
    expect(bus.mmioRead(0xfeb80000, 1)).toBe(0x55);
    expect(fake.log.filter((a) => a.region === 6 && a.isWrite)).toEqual([]);
    expect(dev.mapinfo().find((r) => r.bar === 6)).toMatchObject({ mapinfo: 'trapped-fd', size: 0x800 });
  });
});
