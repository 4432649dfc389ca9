// BAR mapping (bar-map.ts): the BAR registers as the guest sizes and programs them, and the BARs
// placed where they and the command register say.
import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { FakeVfioDevice } from '../../support/fake-device';
import { enableDecode, ivshmemSpec, openFake, placeBar } from '../../support/pci-helpers';

describe('BAR registers', () => {
  it('returns the size mask after all-ones and keeps the type bits', () => {
    const { dev } = openFake();
    dev.configWrite(0x10, 4, 0xffffffff);
    expect(dev.configRead(0x10, 4)).toBe(0xfffe0000);
    dev.configWrite(0x18, 4, 0xffffffff);
    expect(dev.configRead(0x18, 4)).toBe(0xffffffe1);
    dev.configWrite(0x20, 4, 0xffffffff);
    expect(dev.configRead(0x20, 4)).toBe(0);
  });

  it('sizes both halves of a 64-bit BAR', () => {
    const { dev } = openFake(ivshmemSpec());
    dev.configWrite(0x18, 4, 0xffffffff);
    dev.configWrite(0x1c, 4, 0xffffffff);
    expect(dev.configRead(0x18, 4)).toBe(0xfff0000c);
    expect(dev.configRead(0x1c, 4)).toBe(0xffffffff);
    expect(dev.bars[3]).toBeNull();
  });

  it('maps a 64-bit BAR above 4 GiB and unmaps it beyond the address space', () => {
    const bus = new SystemAddressSpaces({ memorySize: 2 ** 40 });
    const dev = VfioPciDevice.open(bus, new FakeVfioDevice(ivshmemSpec()));
    placeBar(dev, 2, 0x80_0000_0000);
    enableDecode(dev);
    expect(dev.bars[2]?.address).toBe(0x80_0000_0000);
    placeBar(dev, 2, 2 ** 40);
    expect(dev.bars[2]?.address).toBeNull();
    expect(dev.mapinfo().filter((r) => r.bar === 2)).toEqual([]);
  });

  it('moves a BAR in a single transaction', () => {
    const { bus, dev } = openFake();
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    const events: string[] = [];
    bus.memory.addMemoryListener({
      begin: () => events.push('begin'),
      commit: () => events.push('commit'),
      regionAdd: (s) => events.push(`add ${s.addr.toString(16)}`),
    });
    events.length = 0;
    placeBar(dev, 0, 0xe0000000);
    expect(events[0]).toBe('begin');
    expect(events.filter((e) => e === 'commit')).toHaveLength(1);
    expect(events).toContain('add e0000000');
    expect(bus.memory.flatView.lookup(0xe0000000)?.region.name).toBe('0000:00:05.0 BAR 0 mmaps[0]');
    expect(bus.memory.flatView.lookup(0xfebc0000)).toBeUndefined();
  });

  it('maps and unmaps with the memory and I/O decode bits', () => {
    const { bus, dev } = openFake();
    placeBar(dev, 0, 0xfebc0000);
    placeBar(dev, 2, 0xc000);
    expect(dev.bars[0]?.address).toBeNull();
    dev.configWrite(0x04, 2, 0x0002);
    expect(dev.bars[0]?.address).toBe(0xfebc0000);
    expect(dev.bars[2]?.address).toBeNull();
    dev.configWrite(0x04, 1, 0x01);
    expect(dev.bars[0]?.address).toBeNull();
    expect(dev.bars[2]?.address).toBe(0xc000);
    expect(bus.memory.flatView.ranges).toEqual([]);
    expect(dev.command).toBe(0x0001);
  });
});
