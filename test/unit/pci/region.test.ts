// The BAR region stack (region.ts): base window, fd-backed region, mmaps, sub-page expansion, and
// what a guest access through them costs and reports.
import { type DeviceErrorEvent, SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { type FakeDeviceSpec, FakeVfioDevice } from '../../support/fake-device';
import {
  barRanges,
  e1000eSpec,
  enableDecode,
  ivshmemSpec,
  openFake,
  placeBar,
  placeBars,
  rtl8139Spec,
} from '../../support/pci-helpers';

describe('VfioPciDevice stacks', () => {
  it("builds QEMU's names: base BAR container, BAR region, mmaps", () => {
    const { dev } = openFake();
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
    const { bus, dev } = openFake();
    placeBars(dev, { 0: 0xfebc0000, 2: 0xc000 });
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
    const { dev } = openFake(spec);
    placeBars(dev, { 0: 0xfebc0000 });
    expect(barRanges(dev, 0)).toEqual([
      [0, 0x1000, '0000:00:05.0 BAR 0 mmaps[0]', 'direct'],
      [0x1000, 0x3000, '0000:00:05.0 BAR 0', 'trapped-fd'],
      [0x4000, 0x1c000, '0000:00:05.0 BAR 0 mmaps[1]', 'direct'],
    ]);
  });

  it('rejects a sparse area outside the region', () => {
    const spec = e1000eSpec();
    spec.bars[0] = { size: 0x20000, sparse: [{ offset: 0x1f000, size: 0x2000 }] };
    expect(() => openFake(spec)).toThrow(RangeError);
  });
});

describe('sub-page BARs', () => {
  it('expands a page-aligned sub-page BAR to the page at priority 0 and shrinks it off alignment', () => {
    const { bus, dev } = openFake(rtl8139Spec());
    placeBars(dev, { 1: 0xfebf1000 });
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
    const bus = new SystemAddressSpaces();
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
    const { bus, fake, dev } = openFake();
    placeBars(dev, { 3: 0xfebf0000 });
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
    const { bus, fake, dev } = openFake();
    placeBars(dev, { 3: 0xfebf0000 });
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
    const { bus, fake, dev } = openFake(rtl8139Spec());
    placeBars(dev, { 0: 0xc100 });
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
    const { bus } = openFake();
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
    const bus = new SystemAddressSpaces();
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
    placeBars(dev, { 2: 0xf0000000 });
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
    placeBars(dev, { 0: 0xfebc0000 });
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
    placeBars(dev, { 0: 0xfebc0000 });
    fake.failing.add(0);
    for (let i = 0; i < 5; i++) bus.mmioRead(0xfebc0010, 4);
    expect(dev.deviceErrorCount).toBe(5);
    expect(lines).toEqual([
      "0000:00:05.0: fd-error read at 0x10 size 4 in '0000:00:05.0 BAR 0': pread failed: EIO [pci/fd-error, read-all-ones] " +
        '(the device fd refused the access (EIO while the guest keeps the device in D3hot, say))',
    ]);
    expect(dev.guestErrors.count('pci', 'fd-error')).toBe(5);
  });
});
