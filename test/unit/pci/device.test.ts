// VfioPciDevice itself: configuration space as the guest sees it, and the device's lifetime.
import { type DeviceErrorEvent, SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { VfioError } from '../../../lib/base/error';
import { GuestErrorSink, type GuestError } from '../../../lib/base';
import { FakeVfioDevice } from '../../support/fake-device';
import { e1000eSpec, enableDecode, openFake, placeBar } from '../../support/pci-helpers';

describe('configuration space', () => {
  it('presents the reset state first: decode, bus master and INTx disable off, BARs unplaced', () => {
    const bus = new SystemAddressSpaces();
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

  it('passes other config writes through to the device', () => {
    const { fake, dev } = openFake();
    dev.configWrite(0x0c, 1, 0x10);
    expect(fake.config[0x0c]).toBe(0x10);
    expect(dev.configRead(0x0c, 1)).toBe(0x10);
  });

  it('rejects bad config accesses with typed errors', () => {
    const { dev } = openFake();
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

describe('deferMappings', () => {
  it('hands the region changes of a stretch of writes over as one update, run when the owner says', () => {
    const { bus, fake, dev } = openFake();
    const updates: (() => void)[] = [];
    dev.deferMappings = (u) => updates.push(u);
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    // The device and the emulated registers have the writes; the bus does not show the BAR yet.
    expect(fake.config[0x04] & 0x07).toBe(0x07);
    expect(dev.configRead(0x04, 2) & 0x07).toBe(0x07);
    expect(dev.bars[0]?.address).toBeNull();
    expect(bus.memory.flatView.ranges).toEqual([]);
    expect(updates).toHaveLength(1);
    updates.shift()!();
    expect(dev.bars[0]?.address).toBe(0xfebc0000);
    expect(bus.memory.flatView.ranges.length).toBeGreaterThan(0);
    // Decode off and on again in one stretch: one update, which places the BAR where it ends up.
    dev.configWrite(0x04, 2, 0x0000);
    placeBar(dev, 0, 0xfeac0000);
    enableDecode(dev);
    expect(updates).toHaveLength(1);
    expect(dev.bars[0]?.address).toBe(0xfebc0000);
    updates.shift()!();
    expect(dev.bars[0]?.address).toBe(0xfeac0000);
    // Back to null: at once again.
    dev.deferMappings = null;
    dev.configWrite(0x04, 2, 0x0000);
    expect(dev.bars[0]?.address).toBeNull();
    bus.close();
  });

  it('an update that runs after the device closed changes nothing and does not throw', () => {
    const { bus, dev } = openFake();
    const updates: (() => void)[] = [];
    dev.deferMappings = (u) => updates.push(u);
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    dev.close();
    expect(() => updates.shift()!()).not.toThrow();
    expect(bus.memory.flatView.ranges).toEqual([]);
    bus.close();
  });
});

describe('guest config accesses the device cannot serve', () => {
  it('reads all-ones past the end of config space, clips partial reads, and drops writes there', () => {
    const { fake, dev } = openFake(e1000eSpec(), { log: null });
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
    const sink = new GuestErrorSink({ log: null });
    const dev = VfioPciDevice.open(new SystemAddressSpaces(), fake, { guestErrors: sink });
    const events: DeviceErrorEvent[] = [];
    const reports: GuestError[] = [];
    sink.on('guest-error', (e) => reports.push(e));
    dev.on('device-error', (e) => events.push(e)); // the deprecated event: the same reports
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
    expect(reports).toEqual([
      {
        source: 'pci',
        kind: 'config-unimplemented',
        device: dev.bdf,
        where: 'config',
        address: free,
        width: 2,
        write: true,
        value: 0x1234,
        action: 'passed-on',
        message: `config-unimplemented write at 0x${free.toString(16)} size 2 in 'config'`,
        hint: expect.stringContaining('no register there'),
        detail: events[0],
      },
    ]);
    expect(dev.guestErrors).toBe(sink);
    expect(fake.take().filter((a) => a.isWrite && a.offset === free)).toHaveLength(1);
  });

  it('reports a config access the device fd refuses and keeps the emulated state', () => {
    const fake = new FakeVfioDevice(e1000eSpec());
    const bus = new SystemAddressSpaces();
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

function caughtErr(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, nothing was thrown');
}

describe('lifetime', () => {
  it('use after close is VfioError ECLOSED on the device and on the bus', () => {
    const { bus, dev } = openFake();
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
    const { bus, fake, dev } = openFake();
    const other = new SystemAddressSpaces();
    try {
      const same = caughtErr(() => VfioPciDevice.open(bus, fake));
      expect(same).toBeInstanceOf(VfioError);
      expect(same).toMatchObject({ code: 'EBUSY', bdf: dev.bdf });
      expect(same.message).toMatch(/already driven by an open VfioPciDevice on this SystemAddressSpaces/);
      expect(caughtErr(() => VfioPciDevice.open(other, fake)).message).toMatch(
        /on another SystemAddressSpaces/,
      );
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
    const { bus, fake, dev } = openFake();
    placeBar(dev, 0, 0xfebc0000);
    enableDecode(dev);
    dev.close();
    dev.close();
    expect(bus.memory.flatView.ranges).toEqual([]);
    expect(fake.mappings.every((m) => (m as unknown as { closed: boolean }).closed)).toBe(true);
    expect(() => dev.configRead(0, 4)).toThrow(/closed/);
  });

  it('closing the bus closes its devices', () => {
    const { bus, dev } = openFake();
    bus.close();
    expect(dev.closed).toBe(true);
    expect(() => bus.mmioRead(0, 4)).toThrow(/closed/);
  });

  it('rejects something that is not a device', () => {
    expect(() => VfioPciDevice.open(new SystemAddressSpaces(), {} as never)).toThrow(TypeError);
  });
});
