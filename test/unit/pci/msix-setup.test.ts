// MSI-X set-up (msix-setup.ts): the table's page left out of the mmaps, relocation, the overlays and
// the emulated control bits, and the emulated table behind them.
import { MemoryRegion } from '../../../lib/memory';
import type { DeviceErrorEvent } from '../../../lib/pci';
import { barRanges, e1000eSpec, enableDecode, openFake, placeBar } from '../../support/pci-helpers';

describe('MSI-X', () => {
  it('overlays the table at the start of BAR 3 and leaves the rest of the page trapped-mmap', () => {
    const { dev } = openFake();
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    expect(barRanges(dev, 3)).toEqual([
      [0, 0x50, 'msix-table', 'emulated'],
      [0x50, 0xfb0, '0000:00:05.0 BAR 3 mmaps[0]', 'trapped-mmap'],
      [0x1000, 0x3000, '0000:00:05.0 BAR 3 mmaps[0]', 'direct'],
    ]);
    expect(dev.msix?.pbaRegion.enabled).toBe(false);
  });

  it("leaves the table's page out of the mmaps when the kernel does not report it mappable", () => {
    const spec = e1000eSpec();
    spec.bars[3] = { size: 0x4000 };
    const { dev } = openFake(spec);
    expect(dev.bars[3]?.mmaps.map((m) => [m.offset, m.size])).toEqual([[0x1000, 0x3000]]);
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    expect(barRanges(dev, 3)).toEqual([
      [0, 0x50, 'msix-table', 'emulated'],
      [0x50, 0xfb0, '0000:00:05.0 BAR 3', 'trapped-fd'],
      [0x1000, 0x3000, '0000:00:05.0 BAR 3 mmaps[0]', 'direct'],
    ]);
  });

  it('splits the mmap around a table in the middle of the BAR', () => {
    const spec = e1000eSpec({
      msix: { entries: 5, tableBar: 3, tableOffset: 0x2000, pbaBar: 3, pbaOffset: 0x3000 },
    });
    spec.bars[3] = { size: 0x4000 };
    const { dev } = openFake(spec);
    expect(dev.bars[3]?.mmaps.map((m) => [m.offset, m.size])).toEqual([
      [0, 0x2000],
      [0x3000, 0x1000],
    ]);
  });

  it('emulates table writes with bounds-checked entries and exposes the vectors', () => {
    const { bus, fake, dev } = openFake();
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    const seen: unknown[] = [];
    dev.msix?.onChange((e) => seen.push(e));
    fake.take();
    bus.mmioWrite(0xfebf0010, 8, 0x00000000fee01000n);
    bus.mmioWrite(0xfebf0018, 4, 0x4022);
    bus.mmioWrite(0xfebf001c, 4, 0);
    expect(dev.msix?.vector(1)).toEqual({ index: 1, address: 0xfee01000n, data: 0x4022, masked: false });
    expect(dev.msix?.vector(0).masked).toBe(true);
    expect(bus.mmioRead(0xfebf0018, 4)).toBe(0x4022);
    expect(seen).toHaveLength(3);
    // The guest's table never reaches the device.
    expect(fake.take()).toEqual([]);
    expect(() => dev.msix?.vector(5)).toThrow(RangeError);
    expect(() => dev.msix?.tableRead(0x50, 4)).toThrow(RangeError);
    expect(() => dev.msix?.tableWrite(0x4e, 4, 0)).toThrow(RangeError);
  });

  it('tracks the enable and function-mask bits of message control', () => {
    const { fake, dev } = openFake();
    const events: unknown[] = [];
    dev.msix?.onChange((e) => events.push(e));
    dev.configWrite(0x52, 2, 0xc000);
    expect(dev.msix?.enabled).toBe(true);
    expect(dev.msix?.functionMasked).toBe(true);
    expect(dev.configRead(0x52, 2)).toBe(0xc004);
    expect(events).toEqual([{ kind: 'control', enabled: true, functionMasked: true }]);
    expect(fake.configView.getUint16(0x52, true) & 0x7ff).toBe(4);
  });

  it('enables the PBA overlay only while a vector is pending', () => {
    const { bus, dev } = openFake();
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    dev.msix?.setPending(3, true);
    expect(bus.mmioRead(0xfebf2000, 4)).toBe(8);
    expect(barRanges(dev, 3)).toContainEqual([0x2000, 8, 'msix-pba', 'emulated']);
    dev.msix?.setPending(3, false);
    expect(barRanges(dev, 3).some((r) => r[2] === 'msix-pba')).toBe(false);
  });

  it('relocates the table to a spare BAR', () => {
    const { dev } = openFake(e1000eSpec(), { msixRelocation: 'bar5' });
    expect(dev.bars[5]).toMatchObject({
      size: 0x1000,
      regionSize: 0,
      type: 'mem32',
      prefetchable: true,
      region: null,
    });
    dev.configWrite(0x24, 4, 0xffffffff);
    expect(dev.configRead(0x24, 4)).toBe(0xfffff008);
    expect(dev.configRead(0x54, 4)).toBe(0x5);
    expect(dev.configRead(0x58, 4)).toBe(0x55);
    placeBar(dev, 3, 0xfebf0000);
    placeBar(dev, 5, 0xfebf8000);
    enableDecode(dev);
    expect(barRanges(dev, 3)).toEqual([[0, 0x4000, '0000:00:05.0 BAR 3 mmaps[0]', 'direct']]);
    // As in QEMU, the base BAR owns what the table does not cover (the PBA overlay stays off).
    expect(barRanges(dev, 5)).toEqual([
      [0, 0x50, 'msix-table', 'emulated'],
      [0x50, 0xfb0, '0000:00:05.0 base BAR 5', 'emulated'],
    ]);
  });

  it('relocates the table to the end of a doubled BAR', () => {
    const { dev } = openFake(e1000eSpec(), { msixRelocation: 'bar3' });
    expect(dev.bars[3]?.size).toBe(0x8000);
    dev.configWrite(0x1c, 4, 0xffffffff);
    expect(dev.configRead(0x1c, 4)).toBe(0xffff8000);
    expect(dev.msix?.tableOffset).toBe(0x4000);
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    expect(barRanges(dev, 3)).toEqual([
      [0, 0x4000, '0000:00:05.0 BAR 3 mmaps[0]', 'direct'],
      [0x4000, 0x50, 'msix-table', 'emulated'],
      [0x4050, 0x3fb0, '0000:00:05.0 base BAR 3', 'emulated'],
    ]);
  });

  it('the base BAR owns the uncovered half: QEMU names, offsets and priority, reads 0, nothing beneath shows', () => {
    const { bus, dev } = openFake(e1000eSpec(), { msixRelocation: 'bar3' });
    // Something lower in the PCI space, under the whole window: it must never show through.
    const under = MemoryRegion.ram('under', 0x10000);
    new Uint8Array(under.backing!).fill(0x5a);
    bus.memory.root.addSubregion(under, 0xfebf0000, 0);
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    const hole = bus.memory.flatView.lookup(0xfebf4050)!;
    expect([hole.region.name, hole.addr, hole.offsetInRegion, hole.region.priority]).toEqual([
      '0000:00:05.0 base BAR 3',
      0xfebf4050,
      0x4050,
      1,
    ]);
    expect(bus.memory.flatView.lookup(0xfebf7ffc)?.region.name).toBe('0000:00:05.0 base BAR 3');
    expect(bus.mmioRead(0xfebf4050, 4)).toBe(0);
    expect(bus.mmioRead(0xfebf7ff8, 8)).toBe(0n);
    bus.mmioWrite(0xfebf6000, 4, 0x12345678);
    expect(bus.mmioRead(0xfebf6000, 4)).toBe(0);
    expect(new Uint8Array(under.backing!)[0x6000]).toBe(0x5a);
    expect(bus.memory.unassignedCount).toBe(0);
    expect(events.map((e) => [e.reason, e.where, e.offset, e.size, e.isWrite])).toEqual([
      ['unbacked', '0000:00:05.0 base BAR 3', 0x4050, 4, false],
      ['unbacked', '0000:00:05.0 base BAR 3', 0x7ff8, 8, false],
      ['unbacked', '0000:00:05.0 base BAR 3', 0x6000, 4, true],
      ['unbacked', '0000:00:05.0 base BAR 3', 0x6000, 4, false],
    ]);
    bus.close();
  });

  it('refuses relocation to an I/O BAR, the shadow of a 64-bit BAR, and auto', () => {
    expect(() => openFake(e1000eSpec(), { msixRelocation: 'bar2' })).toThrow(/I\/O port BAR/);
    expect(() => openFake(e1000eSpec(), { msixRelocation: 'auto' })).toThrow(/no automatic MSI-X relocation/);
    const spec = e1000eSpec();
    spec.bars[4] = { size: 0x1000, type: 'mem64' };
    expect(() => openFake(spec, { msixRelocation: 'bar5' })).toThrow(/64-bit BAR 4/);
  });

  it('rejects a table outside its BAR', () => {
    expect(() =>
      openFake(
        e1000eSpec({ msix: { entries: 5, tableBar: 3, tableOffset: 0x4000, pbaBar: 3, pbaOffset: 0 } }),
      ),
    ).toThrow(RangeError);
  });
});
