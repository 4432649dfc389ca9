// Quirk installation (quirk-install.ts): matched by the IDs the device presents and the BAR.
import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { FakeVfioDevice } from '../../support/fake-device';
import { barRanges, e1000eSpec, ivshmemSpec, openFake, placeBars } from '../../support/pci-helpers';

describe('ID override and quirk matching', () => {
  it('presents overridden IDs and matches quirks by them', () => {
    const { dev } = openFake(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    expect(dev.configRead(0, 4)).toBe(0x816810ec);
    expect(dev.physicalVendorId).toBe(0x1af4);
    expect(dev.bars[2]?.quirks).toEqual([
      'vfio-rtl8168-window-address-quirk',
      'vfio-rtl8168-window-data-quirk',
    ]);
    placeBars(dev, { 2: 0xf0000000 });
    expect(barRanges(dev, 2)).toEqual([
      [0, 0x70, '0000:00:06.0 BAR 2 mmaps[0]', 'trapped-mmap'],
      [0x70, 4, 'vfio-rtl8168-window-data-quirk', 'emulated'],
      [0x74, 4, 'vfio-rtl8168-window-address-quirk', 'emulated'],
      [0x78, 0xf88, '0000:00:06.0 BAR 2 mmaps[0]', 'trapped-mmap'],
      [0x1000, 0xff000, '0000:00:06.0 BAR 2 mmaps[0]', 'direct'],
    ]);
  });

  it('does not apply without the override', () => {
    const { dev } = openFake(ivshmemSpec());
    expect(dev.bars[2]?.quirks).toEqual([]);
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
    const bus = new SystemAddressSpaces();
    const dev = VfioPciDevice.open(bus, fake, { quirks: [quirk] });
    expect(dev.bars[0]?.quirks).toEqual(['test-quirk']);
    expect(dev.bars[1]?.quirks).toEqual([]);
    placeBars(dev, { 0: 0xfebc0000 });
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
    expect(() => VfioPciDevice.open(new SystemAddressSpaces(), fake2, { quirks: [bad] })).toThrow(RangeError);
    expect(fake2.mappings.every((m) => (m as unknown as { closed: boolean }).closed)).toBe(true);
  });

  it('skips an overlay running past the end of a small BAR with a one-line warning, and opens', () => {
    // ivshmem with a 64-byte BAR 2 presented as an RTL8168: both window registers lie past its end.
    const spec = ivshmemSpec();
    spec.bars[2] = { size: 0x40, type: 'mem64' };
    const bus = new SystemAddressSpaces();
    // The quirk table is the host's setup, not the guest's doing: a process warning.
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    let dev: VfioPciDevice;
    try {
      dev = VfioPciDevice.open(bus, new FakeVfioDevice(spec), { vendorId: 0x10ec, deviceId: 0x8168 });
      expect(warn.mock.calls).toEqual([
        [
          '0000:00:06.0 BAR 2: quirk rtl8168-window skipped overlays past the end of the BAR (0x40 bytes): ' +
            'vfio-rtl8168-window-address-quirk at 0x74+0x4, vfio-rtl8168-window-data-quirk at 0x70+0x4',
          { type: 'VfioPciDeviceWarning', code: 'VFIO_BRIDGE_QUIRK_SKIPPED' },
        ],
      ]);
    } finally {
      warn.mockRestore();
    }
    expect(dev.bars[2]?.quirks).toEqual([]);
    expect(dev.guestErrors.total).toBe(0);
    placeBars(dev, { 2: 0xf0000000 });
    // The BAR works, without the window: expanded to its page, as any sub-page BAR.
    expect(barRanges(dev, 2)).toEqual([[0, 0x1000, '0000:00:06.0 BAR 2 mmaps[0]', 'direct']]);
    expect(dev.deviceErrorCount).toBe(0);
  });
});
