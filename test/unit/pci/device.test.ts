import { MemoryRegion } from '../../../lib/memory';
import { type DeviceErrorEvent, PciBus, VfioPciDevice } from '../../../lib/pci';
import { VfioError } from '../../../lib/base/error';
import { type FakeDeviceSpec, FakeVfioDevice } from './fake-device';
import { barRanges, e1000eSpec, enableDecode, ivshmemSpec, placeBar, rtl8139Spec } from './helpers';

/** An RTL8168-like device: I/O BAR 0, the window in 64-bit BAR 2, MSI-X in 64-bit BAR 4. */
function rtl8168Spec(): FakeDeviceSpec {
  return {
    bdf: '0000:02:00.0',
    vendorId: 0x10ec,
    deviceId: 0x8168,
    bars: [
      { size: 0x100, type: 'io' },
      null,
      { size: 0x1000, type: 'mem64' },
      null,
      { size: 0x4000, type: 'mem64' },
    ],
    msix: { entries: 4, tableBar: 4, tableOffset: 0, pbaBar: 4, pbaOffset: 0x800 },
  };
}

function caughtErr(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, nothing was thrown');
}

function open(spec = e1000eSpec(), opts = {}) {
  const bus = new PciBus();
  const fake = new FakeVfioDevice(spec);
  const dev = VfioPciDevice.open(bus, fake, opts);
  return { bus, fake, dev };
}

describe('VfioPciDevice stacks', () => {
  it("builds QEMU's names: base BAR container, BAR region, mmaps", () => {
    const { dev } = open();
    const b0 = dev.bars[0];
    expect(b0?.base.name).toBe('0000:00:05.0 base BAR 0');
    expect(b0?.region?.name).toBe('0000:00:05.0 BAR 0');
    expect(b0?.mmaps.map((m) => m.region.name)).toEqual(['0000:00:05.0 BAR 0 mmaps[0]']);
    expect(b0?.base.subregions).toEqual([b0?.region]);
    expect(b0?.region?.subregions).toEqual([b0?.mmaps[0].region]);
    expect(b0?.mmaps[0].region.kind).toBe('ram-device');
    expect(b0?.region?.kind).toBe('io');
    // The I/O BAR has no mmaps.
    expect(dev.bars[2]?.type).toBe('io');
    expect(dev.bars[2]?.mmaps).toEqual([]);
    expect(dev.bars[4]).toBeNull();
  });

  it('places BARs at priority 1 in the memory space and I/O BARs in the I/O space', () => {
    const { bus, dev } = open();
    placeBar(dev, 0, 0xfebc0000);
    placeBar(dev, 2, 0xc000);
    enableDecode(dev);
    expect(dev.bars[0]?.address).toBe(0xfebc0000);
    expect(dev.bars[0]?.base.parent).toBe(bus.memory.root);
    expect(dev.bars[0]?.base.priority).toBe(1);
    expect(dev.bars[2]?.base.parent).toBe(bus.io.root);
    expect(dev.mapinfo().filter((r) => r.space === 'io')).toEqual([
      expect.objectContaining({
        addr: 0xc000,
        size: 0x20,
        name: '0000:00:05.0 BAR 2',
        mapinfo: 'trapped-fd',
        kind: 'io',
      }),
    ]);
  });

  it('follows sparse mmap areas, one ram-device region per area', () => {
    const spec = e1000eSpec();
    spec.bars[0] = {
      size: 0x20000,
      sparse: [
        { offset: 0, size: 0x1000 },
        { offset: 0x3000, size: 0 },
        { offset: 0x4000, size: 0x1c000 },
      ],
    };
    const { dev } = open(spec);
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    expect(barRanges(dev, 0)).toEqual([
      [0, 0x1000, '0000:00:05.0 BAR 0 mmaps[0]', 'direct'],
      [0x1000, 0x3000, '0000:00:05.0 BAR 0', 'trapped-fd'],
      [0x4000, 0x1c000, '0000:00:05.0 BAR 0 mmaps[1]', 'direct'],
    ]);
  });

  it('rejects a sparse area outside the region', () => {
    const spec = e1000eSpec();
    spec.bars[0] = { size: 0x20000, sparse: [{ offset: 0x1f000, size: 0x2000 }] };
    expect(() => open(spec)).toThrow(RangeError);
  });
});

describe('BAR registers', () => {
  it('returns the size mask after all-ones and keeps the type bits', () => {
    const { dev } = open();
    dev.configWrite(0x10, 4, 0xffffffff);
    expect(dev.configRead(0x10, 4)).toBe(0xfffe0000);
    dev.configWrite(0x18, 4, 0xffffffff);
    expect(dev.configRead(0x18, 4)).toBe(0xffffffe1);
    dev.configWrite(0x20, 4, 0xffffffff);
    expect(dev.configRead(0x20, 4)).toBe(0);
  });

  it('sizes both halves of a 64-bit BAR', () => {
    const { dev } = open(ivshmemSpec());
    dev.configWrite(0x18, 4, 0xffffffff);
    dev.configWrite(0x1c, 4, 0xffffffff);
    expect(dev.configRead(0x18, 4)).toBe(0xfff0000c);
    expect(dev.configRead(0x1c, 4)).toBe(0xffffffff);
    expect(dev.bars[3]).toBeNull();
  });

  it('maps a 64-bit BAR above 4 GiB and unmaps it beyond the address space', () => {
    const bus = new PciBus({ memorySize: 2 ** 40 });
    const dev = VfioPciDevice.open(bus, new FakeVfioDevice(ivshmemSpec()));
    placeBar(dev, 2, 0x80_0000_0000);
    enableDecode(dev);
    expect(dev.bars[2]?.address).toBe(0x80_0000_0000);
    placeBar(dev, 2, 2 ** 40);
    expect(dev.bars[2]?.address).toBeNull();
    expect(dev.mapinfo().filter((r) => r.bar === 2)).toEqual([]);
  });

  it('moves a BAR in a single transaction', () => {
    const { bus, dev } = open();
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

  it('presents the reset state first: decode, bus master and INTx disable off, BARs unplaced', () => {
    const bus = new PciBus();
    const fake = new FakeVfioDevice(e1000eSpec());
    // As the host left it: I/O, memory, bus master, SERR and INTx disable on.
    fake.config[0x04] = 0x07;
    fake.config[0x05] = 0x05;
    const dev = VfioPciDevice.open(bus, fake);
    expect(dev.configRead(0x04, 2)).toBe(0x0100);
    expect(dev.command).toBe(0x0100);
    // On the device too, so it neither decodes nor masters before the guest says so.
    expect(fake.config[0x04] | (fake.config[0x05] << 8)).toBe(0x0100);
    for (let i = 0; i < 6; i++) expect([i, (dev.configRead(0x10 + 4 * i, 4) & ~0xf) >>> 0]).toEqual([i, 0]);
    placeBar(dev, 0, 0xfebc0000);
    expect(dev.bars[0]?.address).toBeNull();
    expect(bus.memory.flatView.ranges).toEqual([]);
    enableDecode(dev);
    expect(dev.bars[0]?.address).toBe(0xfebc0000);
    bus.close();
  });

  it('maps and unmaps with the memory and I/O decode bits', () => {
    const { bus, dev } = open();
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

  it('passes other config writes through to the device', () => {
    const { fake, dev } = open();
    dev.configWrite(0x0c, 1, 0x10);
    expect(fake.config[0x0c]).toBe(0x10);
    expect(dev.configRead(0x0c, 1)).toBe(0x10);
  });

  it('rejects bad config accesses with typed errors', () => {
    const { dev } = open();
    expect(() => dev.configRead(0, 3 as 1)).toThrow(RangeError);
    expect(() => dev.configWrite(0, 8 as 1, 0)).toThrow(RangeError);
    expect(() => dev.configRead(1.5, 1)).toThrow(RangeError);
    expect(() => dev.configWrite(-4, 4, 0)).toThrow(RangeError);
    expect(() => dev.configRead('4' as unknown as number, 1)).toThrow(TypeError);
    expect(() => dev.configRead(-1, 1)).toThrow(RangeError);
    expect(() => dev.configWrite(0x10, 2, 0x10000)).toThrow(RangeError);
    expect(() => dev.configWrite(0x10, 4, '1' as unknown as number)).toThrow(TypeError);
  });
});

describe('guest config accesses the device cannot serve', () => {
  it('reads all-ones past the end of config space, clips partial reads, and drops writes there', () => {
    const { fake, dev } = open(e1000eSpec(), { log: null });
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    fake.config[0xfe] = 0x12;
    fake.config[0xff] = 0x34;
    fake.configWmask.fill(0xff, 0xfc, 0x100);
    fake.take();
    expect(dev.configRead(0x100, 4)).toBe(0xffffffff);
    expect(dev.configRead(0xffc, 1)).toBe(0xff);
    // Partial: the bytes inside config space, then ones.
    expect(dev.configRead(0xfe, 4)).toBe(0xffff3412);
    expect(dev.configRead(0xff, 2)).toBe(0xff34);
    expect(() => dev.configWrite(0x100, 4, 0xdeadbeef)).not.toThrow();
    // A partial write reaches the device for the bytes inside config space only.
    dev.configWrite(0xff, 2, 0xaa55);
    expect(fake.config[0xff]).toBe(0x55);
    expect(fake.take().filter((a) => a.isWrite)).toEqual([
      { via: 'fd', region: 7, offset: 0xff, size: 1, isWrite: true, value: 0x55 },
    ]);
    expect(events.map((e) => [e.reason, e.isWrite, e.where, e.offset, e.size])).toEqual([
      ['config-range', false, 'config', 0x100, 4],
      ['config-range', false, 'config', 0xffc, 1],
      ['config-range', false, 'config', 0xfe, 4],
      ['config-range', false, 'config', 0xff, 2],
      ['config-range', true, 'config', 0x100, 4],
      ['config-range', true, 'config', 0xff, 2],
    ]);
  });

  it('reports a config write where the device has no register, and passes it on as QEMU does', () => {
    const fake = new FakeVfioDevice(e1000eSpec());
    const dev = VfioPciDevice.open(new PciBus(), fake, { log: null });
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    fake.take();
    const inCaps = dev.capabilities.filter((c) => !c.extended).map((c) => c.offset);
    for (const o of inCaps) dev.configWrite(o + 2, 1, 0);
    dev.configWrite(0x3c, 1, 11);
    expect(events).toEqual([]);
    const free = [...Array(0xc0).keys()]
      .map((i) => 0x40 + i)
      .find((o) => !inCaps.some((c) => o >= c && o < c + 0x20))!;
    dev.configWrite(free, 2, 0x1234);
    expect(events.map((e) => [e.reason, e.isWrite, e.where, e.offset, e.size])).toEqual([
      ['config-unimplemented', true, 'config', free, 2],
    ]);
    expect(fake.take().filter((a) => a.isWrite && a.offset === free)).toHaveLength(1);
  });

  it('reports a config access the device fd refuses and keeps the emulated state', () => {
    const fake = new FakeVfioDevice(e1000eSpec());
    const bus = new PciBus();
    const dev = VfioPciDevice.open(bus, fake, { log: null });
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    const refuse = (): never => {
      throw Object.assign(new Error('pwrite failed: EIO'), { name: 'VfioError', code: 'EIO' });
    };
    fake.write = refuse;
    fake.read = refuse;
    expect(() => dev.configWrite(0x10, 4, 0xfebc0000)).not.toThrow();
    expect(() => dev.configWrite(0x0c, 1, 0x10)).not.toThrow();
    // The BAR register is emulated, so it still holds the guest's address.
    expect(dev.configRead(0x10, 4)).toBe(0xfebc0000);
    expect(dev.configRead(0x0c, 1)).toBe(0xff);
    expect(events.map((e) => [e.reason, e.isWrite, e.where, e.offset])).toEqual([
      ['fd-error', true, 'config', 0x10],
      ['fd-error', true, 'config', 0x0c],
      ['fd-error', false, 'config', 0x0c],
    ]);
  });
});

describe('ID override and the RTL8168 window quirk', () => {
  it('presents overridden IDs and matches quirks by them', () => {
    const { dev } = open(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    expect(dev.configRead(0, 4)).toBe(0x816810ec);
    expect(dev.physicalVendorId).toBe(0x1af4);
    expect(dev.bars[2]?.quirks).toEqual([
      'vfio-rtl8168-window-address-quirk',
      'vfio-rtl8168-window-data-quirk',
    ]);
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    expect(barRanges(dev, 2)).toEqual([
      [0, 0x70, '0000:00:06.0 BAR 2 mmaps[0]', 'trapped-mmap'],
      [0x70, 4, 'vfio-rtl8168-window-data-quirk', 'emulated'],
      [0x74, 4, 'vfio-rtl8168-window-address-quirk', 'emulated'],
      [0x78, 0xf88, '0000:00:06.0 BAR 2 mmaps[0]', 'trapped-mmap'],
      [0x1000, 0xff000, '0000:00:06.0 BAR 2 mmaps[0]', 'direct'],
    ]);
  });

  it('does not apply without the override', () => {
    const { dev } = open(ivshmemSpec());
    expect(dev.bars[2]?.quirks).toEqual([]);
  });

  it('passes non-table window accesses to the device at 4 bytes', () => {
    const { bus, fake, dev } = open(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    fake.take();
    bus.mmioWrite(0xf0000070, 4, 0xdeadbeef);
    bus.mmioWrite(0xf0000074, 4, 0x00020000);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0xdeadbeef);
    expect(bus.mmioRead(0xf0000074, 4)).toBe(0x00020000);
    expect(fake.take()).toEqual([
      { via: 'fd', region: 2, offset: 0x70, size: 4, isWrite: true, value: 0xdeadbeef },
      { via: 'fd', region: 2, offset: 0x74, size: 4, isWrite: true, value: 0x00020000 },
      { via: 'fd', region: 2, offset: 0x70, size: 4, isWrite: false, value: 0xdeadbeef },
      { via: 'fd', region: 2, offset: 0x74, size: 4, isWrite: false, value: 0x00020000 },
    ]);
  });

  it('redirects window accesses that target the MSI-X table to the emulated table', () => {
    const { bus, fake, dev } = open(rtl8168Spec());
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    fake.take();
    // Write vector 1's data word (table offset 0x18) through the window.
    bus.mmioWrite(0xf0000070, 4, 0x4041);
    bus.mmioWrite(0xf0000074, 4, 0x80010018);
    expect(dev.msix?.vector(1).data).toBe(0x4041);
    // The data went to the device, the table write did not.
    expect(fake.take()).toEqual([
      { via: 'fd', region: 2, offset: 0x70, size: 4, isWrite: true, value: 0x4041 },
    ]);
    // Read it back: latch the address, then the data register returns the table word.
    bus.mmioWrite(0xf0000074, 4, 0x00010018);
    expect(bus.mmioRead(0xf0000074, 4)).toBe(0x80010018);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0x4041);
    // An index past the table is never redirected, and the flagged write never reaches the device.
    fake.take();
    bus.mmioWrite(0xf0000074, 4, 0x80010ff0);
    expect(dev.msix?.vectors().map((v) => v.data)).toEqual([0, 0x4041, 0, 0]);
    expect(fake.take()).toEqual([]);
  });

  it('refuses unaligned and out-of-table window accesses without throwing, and reports them', () => {
    const { bus, fake, dev } = open(rtl8168Spec(), { log: null });
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    bus.mmioWrite(0xf0000070, 4, 0x4041);
    fake.take();
    // A table write at an unaligned offset: dropped, and it never reaches the device either.
    expect(() => bus.mmioWrite(0xf0000074, 4, 0x80010002)).not.toThrow();
    expect(fake.take()).toEqual([]);
    expect(dev.msix?.vectors().map((v) => v.data)).toEqual([0, 0, 0, 0]);
    // A table read at an unaligned offset, and one past the table: QEMU 7.2 reads a refused table
    // access as 0, replacing what the device returned.
    bus.mmioWrite(0xf0000074, 4, 0x00010002);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0);
    bus.mmioWrite(0xf0000074, 4, 0x00010ff0);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0);
    // An index past the table is dropped the same way.
    bus.mmioWrite(0xf0000074, 4, 0x80010ff0);
    expect(dev.msix?.vectors().map((v) => v.data)).toEqual([0, 0, 0, 0]);
    expect(events).toEqual([
      { bdf: '0000:02:00.0', reason: 'msix-window', isWrite: true, where: 'msix-table', offset: 2, size: 4 },
      { bdf: '0000:02:00.0', reason: 'msix-window', isWrite: false, where: 'msix-table', offset: 2, size: 4 },
      {
        bdf: '0000:02:00.0',
        reason: 'msix-window',
        isWrite: false,
        where: 'msix-table',
        offset: 0xff0,
        size: 4,
      },
      {
        bdf: '0000:02:00.0',
        reason: 'msix-window',
        isWrite: true,
        where: 'msix-table',
        offset: 0xff0,
        size: 4,
      },
    ]);
    expect(dev.deviceErrorCount).toBe(4);
    expect(bus.memory.unassignedCount).toBe(0);
  });

  it('drops and reports window table writes on a device without MSI-X, and reads the device', () => {
    const { bus, fake, dev } = open(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168, log: null });
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    bus.mmioWrite(0xf0000070, 4, 0x1234);
    fake.take();
    expect(() => bus.mmioWrite(0xf0000074, 4, 0x80010018)).not.toThrow();
    expect(() => bus.mmioWrite(0xf0000074, 4, 0x80010002)).not.toThrow();
    // The guest's vector never reaches the device.
    expect(fake.take()).toEqual([]);
    // With no table to redirect to, a latched table address reads the device, as QEMU does.
    bus.mmioWrite(0xf0000074, 4, 0x00010002);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0x1234);
    expect(events.map((e) => [e.reason, e.isWrite, e.offset])).toEqual([
      ['msix-window', true, 0x18],
      ['msix-window', true, 2],
    ]);
    expect(dev.deviceErrorCount).toBe(2);
  });
});

/** An error shaped as lib/vfio's VfioError, without loading the native addon. */
class FakeVfioError extends Error {
  override readonly name = 'VfioError';
  constructor(
    readonly code: string,
    readonly op: string,
  ) {
    super(`${op} failed: ${code}`);
  }
}

/** A fake device whose fd accesses to the regions in `failing` throw `error`. */
class FailingDevice extends FakeVfioDevice {
  failing = new Set<number>();
  error: Error = new FakeVfioError('EIO', 'pread');
  override read(region: number, offset: number, size: 1 | 2 | 4 | 8): number | bigint {
    if (this.failing.has(region)) throw this.error;
    return super.read(region, offset, size);
  }
  override write(region: number, offset: number, size: 1 | 2 | 4 | 8, v: number | bigint): void {
    if (this.failing.has(region)) throw this.error;
    super.write(region, offset, size, v);
  }
}

describe('device fd errors', () => {
  function openFailing(spec: FakeDeviceSpec, opts = {}) {
    const bus = new PciBus();
    const fake = new FailingDevice(spec);
    const dev = VfioPciDevice.open(bus, fake, { log: null, ...opts });
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    return { bus, fake, dev, events };
  }

  it('reads all-ones and drops writes when the fd refuses a BAR access, and reports each', () => {
    const { bus, fake, dev, events } = openFailing(
      { ...e1000eSpec(), rom: new Uint8Array(0x800) },
      {
        noMmap: true,
      },
    );
    placeBar(dev, 0, 0xfebc0000);
    placeBar(dev, 2, 0xc000);
    dev.configWrite(0x30, 4, 0xfeb00001);
    enableDecode(dev);
    // The guest put the device in D3hot: the kernel now refuses BAR and ROM accesses with EIO.
    for (const r of [0, 2, 6]) fake.failing.add(r);
    fake.take();
    expect(bus.mmioRead(0xfebc0010, 4)).toBe(0xffffffff);
    expect(bus.mmioRead(0xfebc0010, 8)).toBe(0xffffffffffffffffn);
    expect(() => bus.mmioWrite(0xfebc0010, 4, 1)).not.toThrow();
    expect(bus.pioRead(0xc000, 2)).toBe(0xffff);
    expect(() => bus.pioWrite(0xc000, 1, 1)).not.toThrow();
    expect(bus.mmioRead(0xfeb00000, 4)).toBe(0xffffffff);
    expect(events.map((e) => [e.reason, e.isWrite, e.where, e.offset, e.size])).toEqual([
      ['fd-error', false, '0000:00:05.0 BAR 0', 0x10, 4],
      ['fd-error', false, '0000:00:05.0 BAR 0', 0x10, 8],
      ['fd-error', true, '0000:00:05.0 BAR 0', 0x10, 4],
      ['fd-error', false, '0000:00:05.0 BAR 2', 0, 2],
      ['fd-error', true, '0000:00:05.0 BAR 2', 0, 1],
      ['fd-error', false, 'vfio[0000:00:05.0].rom', 0, 4],
    ]);
    expect(events.every((e) => e.error === fake.error)).toBe(true);
    expect(dev.deviceErrorCount).toBe(6);
    // Back in D0, the same accesses reach the device again.
    fake.failing.clear();
    bus.mmioWrite(0xfebc0010, 4, 0x1234);
    expect(bus.mmioRead(0xfebc0010, 4)).toBe(0x1234);
  });

  it("reads all-ones and drops writes when a quirk's pass-through access fails", () => {
    const { bus, fake, dev, events } = openFailing(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    fake.failing.add(2);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0xffffffff);
    expect(bus.mmioRead(0xf0000074, 4)).toBe(0xffffffff);
    expect(() => bus.mmioWrite(0xf0000070, 4, 5)).not.toThrow();
    expect(() => bus.mmioWrite(0xf0000074, 4, 0x20000)).not.toThrow();
    expect(events.map((e) => [e.reason, e.isWrite, e.where, e.offset])).toEqual([
      ['fd-error', false, '0000:00:06.0 BAR 2', 0x70],
      ['fd-error', false, '0000:00:06.0 BAR 2', 0x74],
      ['fd-error', true, '0000:00:06.0 BAR 2', 0x70],
      ['fd-error', true, '0000:00:06.0 BAR 2', 0x74],
    ]);
  });

  it('still throws errors that are not VFIO failures', () => {
    const { bus, fake, dev } = openFailing(e1000eSpec(), { noMmap: true });
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    fake.error = new TypeError('a bug');
    fake.failing.add(0);
    expect(() => bus.mmioRead(0xfebc0010, 4)).toThrow(TypeError);
    expect(() => bus.mmioWrite(0xfebc0010, 4, 1)).toThrow(TypeError);
    expect(dev.deviceErrorCount).toBe(0);
  });

  it('logs at a limited rate', () => {
    const lines: string[] = [];
    const { bus, fake, dev } = openFailing(e1000eSpec(), {
      noMmap: true,
      log: (l: string) => lines.push(l),
      logIntervalMs: 1e9,
    });
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    fake.failing.add(0);
    for (let i = 0; i < 5; i++) bus.mmioRead(0xfebc0010, 4);
    expect(dev.deviceErrorCount).toBe(5);
    expect(lines).toEqual([
      "0000:00:05.0: fd-error read at 0x10 size 4 in '0000:00:05.0 BAR 0': pread failed: EIO",
    ]);
  });
});

describe('MSI-X', () => {
  it('overlays the table at the start of BAR 3 and leaves the rest of the page trapped-mmap', () => {
    const { dev } = open();
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
    const { dev } = open(spec);
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
    const { dev } = open(spec);
    expect(dev.bars[3]?.mmaps.map((m) => [m.offset, m.size])).toEqual([
      [0, 0x2000],
      [0x3000, 0x1000],
    ]);
  });

  it('emulates table writes with bounds-checked entries and exposes the vectors', () => {
    const { bus, fake, dev } = open();
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
    const { fake, dev } = open();
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
    const { bus, dev } = open();
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    dev.msix?.setPending(3, true);
    expect(bus.mmioRead(0xfebf2000, 4)).toBe(8);
    expect(barRanges(dev, 3)).toContainEqual([0x2000, 8, 'msix-pba', 'emulated']);
    dev.msix?.setPending(3, false);
    expect(barRanges(dev, 3).some((r) => r[2] === 'msix-pba')).toBe(false);
  });

  it('relocates the table to a spare BAR', () => {
    const { dev } = open(e1000eSpec(), { msixRelocation: 'bar5' });
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
    const { dev } = open(e1000eSpec(), { msixRelocation: 'bar3' });
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
    const { bus, dev } = open(e1000eSpec(), { msixRelocation: 'bar3' });
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
    expect(() => open(e1000eSpec(), { msixRelocation: 'bar2' })).toThrow(/I\/O port BAR/);
    expect(() => open(e1000eSpec(), { msixRelocation: 'auto' })).toThrow(/no automatic MSI-X relocation/);
    const spec = e1000eSpec();
    spec.bars[4] = { size: 0x1000, type: 'mem64' };
    expect(() => open(spec, { msixRelocation: 'bar5' })).toThrow(/64-bit BAR 4/);
  });

  it('rejects a table outside its BAR', () => {
    expect(() =>
      open(e1000eSpec({ msix: { entries: 5, tableBar: 3, tableOffset: 0x4000, pbaBar: 3, pbaOffset: 0 } })),
    ).toThrow(RangeError);
  });
});

describe('sub-page BARs', () => {
  it('expands a page-aligned sub-page BAR to the page at priority 0 and shrinks it off alignment', () => {
    const { bus, dev } = open(rtl8139Spec());
    placeBar(dev, 1, 0xfebf1000);
    enableDecode(dev);
    const b1 = dev.bars[1];
    expect(b1?.expanded).toBe(true);
    expect(b1?.base.size).toBe(0x1000);
    expect(b1?.region?.size).toBe(0x1000);
    expect(b1?.mmaps[0].region.size).toBe(0x1000);
    expect(b1?.base.priority).toBe(0);
    expect(barRanges(dev, 1)).toEqual([[0, 0x1000, '0000:00:04.0 BAR 1 mmaps[0]', 'direct']]);
    // Moving off page alignment brings the real size back: a trapped sub-page section.
    placeBar(dev, 1, 0xfebf1100);
    expect(b1?.expanded).toBe(false);
    expect(b1?.base.size).toBe(0x100);
    expect(b1?.base.priority).toBe(1);
    expect(barRanges(dev, 1)).toEqual([[0, 0x100, '0000:00:04.0 BAR 1 mmaps[0]', 'trapped-mmap']]);
    expect(bus.memory.flatView.lookup(0xfebf1200)).toBeUndefined();
  });

  it('does not let an expanded BAR hide another BAR sharing its page', () => {
    const bus = new PciBus();
    const a = VfioPciDevice.open(bus, new FakeVfioDevice(rtl8139Spec()));
    const spec = rtl8139Spec();
    spec.bdf = '0000:00:07.0';
    const b = VfioPciDevice.open(bus, new FakeVfioDevice(spec));
    placeBar(a, 1, 0xfebf1000);
    placeBar(b, 1, 0xfebf1100);
    enableDecode(a);
    enableDecode(b);
    expect(bus.memory.flatView.lookup(0xfebf1100)?.region.name).toBe('0000:00:07.0 BAR 1 mmaps[0]');
    expect(bus.memory.flatView.lookup(0xfebf1000)?.region.name).toBe('0000:00:04.0 BAR 1 mmaps[0]');
    expect(bus.memory.flatView.lookup(0xfebf1800)?.region.name).toBe('0000:00:04.0 BAR 1 mmaps[0]');
  });
});

describe('routing', () => {
  it('serves trapped-mmap and direct ranges with one access of exactly the guest size', () => {
    const { bus, fake, dev } = open();
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    fake.take();
    for (const size of [1, 2, 4] as const) {
      bus.mmioWrite(0xfebf0060, size, 0x5a);
      expect(bus.mmioRead(0xfebf0060, size)).toBe(0x5a);
    }
    bus.mmioWrite(0xfebf1008, 8, 0x1122334455667788n);
    expect(bus.mmioRead(0xfebf1008, 8)).toBe(0x1122334455667788n);
    expect(fake.take().map((a) => [a.via, a.offset, a.size, a.isWrite])).toEqual([
      ['mmap', 0x60, 1, true],
      ['mmap', 0x60, 1, false],
      ['mmap', 0x60, 2, true],
      ['mmap', 0x60, 2, false],
      ['mmap', 0x60, 4, true],
      ['mmap', 0x60, 4, false],
      ['mmap', 0x1008, 8, true],
      ['mmap', 0x1008, 8, false],
    ]);
  });

  it('serves unaligned mmap accesses as one access of exactly the guest size, never a byte copy', () => {
    const { bus, fake, dev } = open();
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    fake.take();
    bus.mmioWrite(0xfebf1003, 8, 0x1122334455667788n);
    expect(bus.mmioRead(0xfebf1003, 8)).toBe(0x1122334455667788n);
    bus.mmioWrite(0xfebf0061, 2, 0xbeef);
    expect(bus.mmioRead(0xfebf0061, 2)).toBe(0xbeef);
    bus.mmioWrite(0xfebf0063, 4, 0xa1b2c3d4);
    expect(bus.mmioRead(0xfebf0063, 4)).toBe(0xa1b2c3d4);
    expect(fake.take().map((a) => [a.via, a.offset, a.size, a.isWrite])).toEqual([
      ['mmap', 0x1003, 8, true],
      ['mmap', 0x1003, 8, false],
      ['mmap', 0x61, 2, true],
      ['mmap', 0x61, 2, false],
      ['mmap', 0x63, 4, true],
      ['mmap', 0x63, 4, false],
    ]);
  });

  it('serves fd-backed BARs with one pread/pwrite of the guest size', () => {
    const { bus, fake, dev } = open(rtl8139Spec());
    placeBar(dev, 0, 0xc100);
    enableDecode(dev);
    fake.take();
    bus.pioWrite(0xc137, 1, 0x10);
    expect(bus.pioRead(0xc136, 2)).toBe(0x1000);
    bus.dispatch('io', 0xc140, 4, true, 0xabcdef01);
    expect(bus.dispatch('io', 0xc140, 4, false)).toBe(0xabcdef01);
    expect(fake.take().map((a) => [a.via, a.region, a.offset, a.size])).toEqual([
      ['fd', 0, 0x37, 1],
      ['fd', 0, 0x36, 2],
      ['fd', 0, 0x40, 4],
      ['fd', 0, 0x40, 4],
    ]);
  });

  it('rejects malformed exits with typed errors', () => {
    const { bus } = open();
    expect(() => bus.dispatch('memory', 0x1000, 9 as 1, false)).toThrow(RangeError);
    expect(() => bus.dispatch('memory', -1, 4, false)).toThrow(RangeError);
    expect(() => bus.dispatch('memory', 0x1000, 8, true, 1)).toThrow(TypeError);
    expect(() => bus.dispatch('memory', 0x1000, 4, true, 2 ** 32)).toThrow(RangeError);
    expect(() => bus.dispatch('memory', 0x1000, 9 as 1, true, 1)).toThrow(RangeError);
    expect(() => bus.dispatch('memory', 0x1000, 4, true)).toThrow(TypeError);
    expect(() => bus.dispatch('io', 0xc000, 4, true, 1n)).toThrow(TypeError);
    expect(() => bus.dispatch('pci' as 'io', 0x1000, 4, false)).toThrow(TypeError);
  });
});

describe('expansion ROM', () => {
  it('is read through the fd when enabled and drops writes', () => {
    const rom = new Uint8Array(0x800);
    rom.set([0x55, 0xaa, 0x04]);
    const spec = { ...e1000eSpec(), rom };
    const { bus, fake, dev } = open(spec);
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

describe('inspection', () => {
  it('dumps at the widest accepted width by default and never wider', () => {
    const { bus, dev } = open(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    bus.mmioWrite(0xf0000000, 8, 0x0807060504030201n);
    expect(dev.dump(2, 0, 16)).toBe('00000000f0000000: 0x0807060504030201 0x0000000000000000');
    expect(dev.dump(2, 0, 4, { width: 1 })).toBe('00000000f0000000: 0x01 0x02 0x03 0x04');
    // The quirk accepts only 4-byte accesses.
    expect(dev.dump(2, 0x70, 8)).toBe('00000000f0000070: 0x00000000 0x00000000');
    expect(() => dev.dump(2, 0x70, 8, { width: 8 })).toThrow(RangeError);
    expect(() => dev.dump(2, 0x70, 8, { width: 2 })).toThrow(RangeError);
    expect(() => dev.dump(2, 0xffff8, 16)).toThrow(RangeError);
    expect(() => dev.dump(0, 0, 4)).toThrow(/not mapped/);
    expect(() => dev.dump(1, 0, 4)).toThrow(/not implemented/);
  });

  it('renders a mapinfo column in the flat mtree and in the JSON', () => {
    const { bus, dev } = open();
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    const text = bus.mtree('memory', { flat: true });
    expect(text).toMatch(/msix-table.*emulated/);
    expect(text).toMatch(/BAR 3 mmaps\[0\].*trapped-mmap/);
    expect(text).toMatch(/BAR 3 mmaps\[0\].*direct/);
    const json = JSON.parse(JSON.stringify(bus.mtreeJson()));
    expect(json.mapinfo).toContainEqual(
      expect.objectContaining({ name: 'msix-table', mapinfo: 'emulated', barOffset: 0 }),
    );
  });
});

describe('lifetime', () => {
  it('use after close is VfioError ECLOSED on the device and on the bus', () => {
    const { bus, dev } = open();
    dev.close();
    const devErr = caughtErr(() => dev.configRead(0, 4));
    expect(devErr).toBeInstanceOf(VfioError);
    expect(devErr).toMatchObject({ code: 'ECLOSED', bdf: dev.bdf });
    bus.close();
    for (const fn of [() => bus.mmioRead(0, 4), () => bus.dispatch('io', 0, 1, false)]) {
      const e = caughtErr(fn);
      expect(e).toBeInstanceOf(VfioError);
      expect(e).toMatchObject({ code: 'ECLOSED' });
    }
    const onClosed = caughtErr(() => VfioPciDevice.open(bus, new FakeVfioDevice(e1000eSpec())));
    expect(onClosed).toMatchObject({ code: 'ECLOSED' });
  });

  it('a second VfioPciDevice on a device already driven is refused, naming the owner', () => {
    const { bus, fake, dev } = open();
    const other = new PciBus();
    try {
      const same = caughtErr(() => VfioPciDevice.open(bus, fake));
      expect(same).toBeInstanceOf(VfioError);
      expect(same).toMatchObject({ code: 'EBUSY', bdf: dev.bdf });
      expect(same.message).toMatch(/already driven by an open VfioPciDevice on this PciBus/);
      expect(caughtErr(() => VfioPciDevice.open(other, fake)).message).toMatch(/on another PciBus/);
      // The refused open left nothing behind, and once the owner closes the device is free again.
      expect(other.memory.root.subregions).toEqual([]);
      dev.close();
      VfioPciDevice.open(other, fake).close();
    } finally {
      other.close();
      bus.close();
    }
  });

  it('close removes the BARs, closes the mappings and refuses further use', () => {
    const { bus, fake, dev } = open();
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    dev.close();
    dev.close();
    expect(bus.memory.flatView.ranges).toEqual([]);
    expect(fake.mappings.every((m) => (m as unknown as { closed: boolean }).closed)).toBe(true);
    expect(() => dev.configRead(0, 4)).toThrow(/closed/);
  });

  it('closing the bus closes its devices', () => {
    const { bus, dev } = open();
    bus.close();
    expect(dev.closed).toBe(true);
    expect(() => bus.mmioRead(0, 4)).toThrow(/closed/);
  });

  it('rejects something that is not a device', () => {
    expect(() => VfioPciDevice.open(new PciBus(), {} as never)).toThrow(TypeError);
  });
});

describe('openByBdf', () => {
  it('rejects a BDF that is not a string before touching VFIO', () => {
    expect(() => VfioPciDevice.openByBdf(new PciBus(), 3 as unknown as string)).toThrow(TypeError);
  });
});

describe('quirk framework', () => {
  it('installs declarative quirks matched by presented IDs and BAR, and rejects malformed overlays', () => {
    const fake = new FakeVfioDevice(e1000eSpec());
    const seen: number[] = [];
    const quirk = {
      name: 'test',
      match: { vendor: 0x8086, bar: 0 },
      overlays: () => [
        {
          name: 'test-quirk',
          offset: 0x10,
          size: 4,
          ops: {
            read: () => 0x1234,
            write: (_o: number, _s: number, v: number | bigint) => void seen.push(Number(v)),
          },
        },
      ],
    };
    const bus = new PciBus();
    const dev = VfioPciDevice.open(bus, fake, { quirks: [quirk] });
    expect(dev.bars[0]?.quirks).toEqual(['test-quirk']);
    expect(dev.bars[1]?.quirks).toEqual([]);
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    expect(bus.mmioRead(0xfebc0010, 4)).toBe(0x1234);
    bus.mmioWrite(0xfebc0010, 4, 7);
    expect(seen).toEqual([7]);
    expect(
      dev
        .mapinfo()
        .filter((r) => r.bar === 0)
        .map((r) => r.mapinfo),
    ).toEqual(['trapped-mmap', 'emulated', 'trapped-mmap', 'direct']);
    // A malformed overlay is a bug in the quirk: open fails and closes the mappings made so far.
    const bad = { ...quirk, overlays: () => [{ ...quirk.overlays()[0], size: 0 }] };
    const fake2 = new FakeVfioDevice(e1000eSpec());
    expect(() => VfioPciDevice.open(new PciBus(), fake2, { quirks: [bad] })).toThrow(RangeError);
    expect(fake2.mappings.every((m) => (m as unknown as { closed: boolean }).closed)).toBe(true);
  });

  it('skips an overlay running past the end of a small BAR with a one-line warning, and opens', () => {
    // ivshmem with a 64-byte BAR 2 presented as an RTL8168: both window registers lie past its end.
    const spec = ivshmemSpec();
    spec.bars[2] = { size: 0x40, type: 'mem64' };
    const lines: string[] = [];
    const bus = new PciBus();
    const dev = VfioPciDevice.open(bus, new FakeVfioDevice(spec), {
      vendorId: 0x10ec,
      deviceId: 0x8168,
      log: (l) => lines.push(l),
    });
    expect(dev.bars[2]?.quirks).toEqual([]);
    expect(lines).toEqual([
      '0000:00:06.0 BAR 2: quirk rtl8168-window skipped overlays past the end of the BAR (0x40 bytes): ' +
        'vfio-rtl8168-window-address-quirk at 0x74+0x4, vfio-rtl8168-window-data-quirk at 0x70+0x4',
    ]);
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    // The BAR works, without the window: expanded to its page, as any sub-page BAR.
    expect(barRanges(dev, 2)).toEqual([[0, 0x1000, '0000:00:06.0 BAR 2 mmaps[0]', 'direct']]);
    expect(dev.deviceErrorCount).toBe(0);
  });
});

describe('info mtree', () => {
  it("renders QEMU's stack, names and priorities for an e1000e BAR 3 and an ivshmem-as-RTL8168 BAR 2", () => {
    const bus = new PciBus();
    const e = VfioPciDevice.open(bus, new FakeVfioDevice(e1000eSpec()));
    placeBar(e, 3, 0xfebf0000);
    enableDecode(e);
    const v = VfioPciDevice.open(bus, new FakeVfioDevice(ivshmemSpec()), {
      vendorId: 0x10ec,
      deviceId: 0x8168,
    });
    placeBar(v, 2, 0x8_0000_0000);
    enableDecode(v);
    const tree = bus.mtree('memory').split('\n');
    expect(tree).toEqual(
      expect.arrayContaining([
        '    00000000febf0000-00000000febf3fff (prio 1, i/o): 0000:00:05.0 base BAR 3',
        '      00000000febf0000-00000000febf004f (prio 0, i/o): msix-table',
        '      00000000febf0000-00000000febf3fff (prio 0, i/o): 0000:00:05.0 BAR 3',
        '        00000000febf0000-00000000febf3fff (prio 0, ramd): 0000:00:05.0 BAR 3 mmaps[0]',
        '    0000000800000000-00000008000fffff (prio 1, i/o): 0000:00:06.0 base BAR 2',
        '        0000000800000070-0000000800000073 (prio 1, i/o): vfio-rtl8168-window-data-quirk',
        '        0000000800000074-0000000800000077 (prio 1, i/o): vfio-rtl8168-window-address-quirk',
      ]),
    );
    const flat = bus.mtree('memory', { flat: true }).split('\n');
    expect(flat).toEqual(
      expect.arrayContaining([
        '  0000000800000000-000000080000006f (prio 0, ramd): 0000:00:06.0 BAR 2 mmaps[0] trapped-mmap',
        '  0000000800000070-0000000800000073 (prio 1, i/o): vfio-rtl8168-window-data-quirk emulated',
      ]),
    );
  });
});
