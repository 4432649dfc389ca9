// Building a device in steps (build.ts): open() runs them at once, openAsync() with a turn of the
// event loop after each, and both must build the same device from the same device accesses.
import { SystemAddressSpaces, VfioPciDevice, type VfioPciDeviceOptions } from '../../../lib/pci';
import { VFIO_PCI_CONFIG_REGION_INDEX } from '../../../lib/vfio/uapi';
import { type FakeDeviceSpec, FakeVfioDevice } from '../../support/fake-device';
import {
  e1000eSpec,
  enableDecode,
  ivshmemSpec,
  placeBar,
  rtl8139Spec,
  ticker,
} from '../../support/pci-helpers';

/** Everything a device shows of itself, as plain data. */
function describeDevice(dev: VfioPciDevice) {
  const config: number[] = [];
  for (let o = 0; o < dev.configSize; o += 4) config.push(dev.configRead(o, 4));
  return {
    ids: [dev.vendorId, dev.deviceId, dev.physicalVendorId, dev.physicalDeviceId],
    configSize: dev.configSize,
    capabilities: dev.capabilities,
    command: dev.command,
    powerState: dev.powerState,
    bars: dev.bars.map(
      (b) =>
        b && {
          bar: [b.index, b.type, b.prefetchable, b.size, b.regionSize, b.address, b.expanded, b.expandable],
          base: [b.base.name, b.base.size, b.base.subregions.map((r) => r.name)],
          region: b.region && [b.region.name, b.region.size, b.region.subregions.map((r) => r.name)],
          mmaps: b.mmaps.map((m) => [m.index, m.offset, m.size, m.region.name, m.memory.length]),
          quirks: b.quirks,
          mmapError: b.mmapError?.message ?? null,
        },
    ),
    rom: dev.rom && [dev.rom.size, dev.rom.address, dev.rom.region.name],
    msix: dev.msix && [
      dev.msix.capOffset,
      dev.msix.entries,
      dev.msix.tableBar,
      dev.msix.tableOffset,
      dev.msix.pbaBar,
      dev.msix.pbaOffset,
      dev.msix.relocated,
    ],
    irq: [dev.irq.pin, dev.irq.msi?.capOffset ?? null, dev.irq.mode],
    config,
    errors: dev.deviceErrorCount,
  };
}

/** The device on its bus once the guest placed its BARs and enabled decode. */
function placed(dev: VfioPciDevice) {
  let mem = 0xf000_0000;
  let io = 0xc000;
  for (const b of dev.bars) {
    if (!b) continue;
    if (b.type === 'io') {
      placeBar(dev, b.index, io);
      io += 0x1000;
    } else {
      placeBar(dev, b.index, mem);
      mem += Math.max(b.size, 0x10_0000);
    }
  }
  if (dev.rom) dev.configWrite(0x30, 4, 0xfe00_0001);
  enableDecode(dev);
  return { mtree: dev.bus.mtree('memory'), io: dev.bus.mtree('io'), mapinfo: dev.mapinfo() };
}

const sparse = (): FakeDeviceSpec => {
  const spec = e1000eSpec();
  spec.bars[0] = {
    size: 0x20000,
    sparse: [
      { offset: 0, size: 0x1000 },
      { offset: 0x4000, size: 0x1c000 },
    ],
  };
  return spec;
};

const cases: [string, () => FakeDeviceSpec, VfioPciDeviceOptions][] = [
  ['e1000e', () => e1000eSpec(), {}],
  [
    'e1000e with a ROM, MSI-X moved to BAR 5',
    () => ({ ...e1000eSpec(), rom: new Uint8Array(0x800) }),
    { msixRelocation: 'bar5' },
  ],
  ['e1000e with MSI-X at the end of BAR 3', () => e1000eSpec(), { msixRelocation: 'bar3' }],
  ['e1000e with sparse mmaps, no mmap', sparse, { noMmap: true }],
  ['e1000e with sparse mmaps', sparse, {}],
  ['ivshmem as an RTL8168 (quirk)', () => ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 }],
  ['rtl8139 (sub-page BAR)', () => rtl8139Spec(), {}],
];

describe('open in steps', () => {
  it.each(cases)(
    'open and openAsync build the same device from the same accesses: %s',
    async (_, spec, opts) => {
      const a = new FakeVfioDevice(spec());
      const b = new FakeVfioDevice(spec());
      const sync = VfioPciDevice.open(new SystemAddressSpaces(), a, { log: null, ...opts });
      const async = await VfioPciDevice.openAsync(new SystemAddressSpaces(), b, { log: null, ...opts });
      expect(b.take()).toEqual(a.take());
      expect(b.mappings.length).toBe(a.mappings.length);
      expect(describeDevice(async)).toEqual(describeDevice(sync));
      expect(placed(async)).toEqual(placed(sync));
      expect(b.take()).toEqual(a.take());
      sync.bus.close();
      async.bus.close();
    },
  );

  it('openAsync gives the event loop a turn after each step; open takes none', async () => {
    const fake = new FakeVfioDevice(e1000eSpec());
    const t = ticker();
    const turnOf: number[] = [];
    const configTurns = new Set<number>();
    const read = fake.read.bind(fake);
    fake.read = (r, o, s) => {
      turnOf.push(t.turns);
      if (r === VFIO_PCI_CONFIG_REGION_INDEX) configTurns.add(t.turns);
      return read(r, o, s);
    };
    VfioPciDevice.open(new SystemAddressSpaces(), fake).close();
    expect(new Set(turnOf).size).toBe(1);
    turnOf.length = 0;
    configTurns.clear();
    const dev = await VfioPciDevice.openAsync(new SystemAddressSpaces(), fake);
    const turns = t.turns;
    t.stop();
    // Configuration space, the BARs found, four BAR stacks, MSI-X, the quirks, the ROM.
    expect(turns).toBeGreaterThanOrEqual(9);
    // The device's own accesses are spread over the steps, not made in one go: configuration space
    // alone over the IDs, the capability list and the implemented bytes (and the BARs after).
    expect(new Set(turnOf).size).toBeGreaterThanOrEqual(2);
    expect(configTurns.size).toBeGreaterThanOrEqual(4);
    expect(dev.closed).toBe(false);
    dev.bus.close();
  });

  it('the device counts as driven while it is built: a second open meanwhile is refused', async () => {
    const fake = new FakeVfioDevice(e1000eSpec());
    const bus = new SystemAddressSpaces();
    const first = VfioPciDevice.openAsync(bus, fake);
    let refused: unknown;
    try {
      VfioPciDevice.open(new SystemAddressSpaces(), fake);
    } catch (e) {
      refused = e;
    }
    expect(refused).toMatchObject({ code: 'EBUSY', bdf: fake.bdf });
    await expect(VfioPciDevice.openAsync(bus, fake)).rejects.toMatchObject({ code: 'EBUSY' });
    const dev = await first;
    expect(dev.closed).toBe(false);
    bus.close();
  });

  it('a bus closed meanwhile fails the open with ECLOSED, unmapped and with the device free again', async () => {
    const fake = new FakeVfioDevice(e1000eSpec());
    const bus = new SystemAddressSpaces();
    const opening = VfioPciDevice.openAsync(bus, fake);
    setImmediate(() => bus.close());
    await expect(opening).rejects.toMatchObject({ code: 'ECLOSED' });
    expect(fake.mappings.length).toBeGreaterThan(0);
    expect(fake.mappings.every((m) => (m as unknown as { closed: boolean }).closed)).toBe(true);
    const again = new SystemAddressSpaces();
    VfioPciDevice.open(again, fake).close();
    again.close();
  });

  it('a build that fails part-way unmaps what it mapped and frees the device, in both forms', async () => {
    const bad = {
      name: 'bad',
      match: { bar: 0 },
      overlays: () => [
        { name: 'bad-quirk', offset: 0, size: 0, ops: { read: () => 0, write: () => undefined } },
      ],
    };
    for (const open of [
      (bus: SystemAddressSpaces, f: FakeVfioDevice) =>
        Promise.resolve().then(() => VfioPciDevice.open(bus, f, { quirks: [bad] })),
      (bus: SystemAddressSpaces, f: FakeVfioDevice) => VfioPciDevice.openAsync(bus, f, { quirks: [bad] }),
    ]) {
      const fake = new FakeVfioDevice(e1000eSpec());
      const bus = new SystemAddressSpaces();
      await expect(open(bus, fake)).rejects.toThrow(RangeError);
      expect(fake.mappings.every((m) => (m as unknown as { closed: boolean }).closed)).toBe(true);
      expect(bus.memory.root.subregions).toEqual([]);
      VfioPciDevice.open(bus, fake).close();
      bus.close();
    }
    await expect(
      VfioPciDevice.openAsync(new SystemAddressSpaces(), new FakeVfioDevice(e1000eSpec()), {
        msixRelocation: 'auto',
      }),
    ).rejects.toMatchObject({
      code: 'ENORELOCATION',
    });
  });
});
