import { runSteps } from '../../../lib/base/steps';
import fc from 'fast-check';
import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { transaction } from '../../../lib/memory';
import {
  DEFAULT_PCI_WINDOWS,
  type PciConfigTarget,
  PciRootBus,
  pciIntxGsi,
  placeBars,
  placeBarsSteps,
} from '../../../lib/vmm';
import { type FakeBarSpec, FakeVfioDevice } from '../../support/fake-device';
import { e1000eSpec, ivshmemSpec, rtl8139Spec } from '../../support/pci-helpers';

function machine() {
  const bus = new SystemAddressSpaces();
  const host = new PciRootBus();
  const open = (slot: number, spec: ReturnType<typeof e1000eSpec>, opts = {}) => {
    const fake = new FakeVfioDevice(spec);
    fake.config[0x3d] = 1; // INTA
    const dev = VfioPciDevice.open(bus, fake, { log: null, ...opts });
    host.attach(slot, 0, dev);
    return dev;
  };
  return { bus, host, open };
}

describe('placeBars', () => {
  it('in steps, a BAR at a time: the same placement, nothing decoded or mapped until enable()', () => {
    const a = machine();
    for (const [slot, spec] of [
      [5, e1000eSpec()],
      [4, rtl8139Spec()],
      [6, ivshmemSpec()],
    ] as const)
      a.open(slot, spec);
    const atOnce = placeBars(a.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
    const b = machine();
    const devs = [b.open(5, e1000eSpec()), b.open(4, rtl8139Spec()), b.open(6, ivshmemSpec())];
    const steps = placeBarsSteps(b.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
    const seen: string[] = [];
    let step = steps.next();
    while (!step.done) {
      seen.push(step.value);
      // Between the steps, no device decodes and the bus maps none of their BARs.
      expect(devs.map((d) => d.command & 0x3)).toEqual([0, 0, 0]);
      expect(b.bus.mapinfo().filter((r) => r.bdf !== undefined)).toEqual([]);
      step = steps.next();
    }
    // A step a BAR register and one for the ROM (ivshmem's 64-bit BAR 2 takes two registers in
    // one): 7 + 7 + 6, then a function's BARs programmed a step each.
    expect(seen).toEqual([...Array<string>(20).fill('probe'), 'program', 'program']);
    expect(devs.map((d) => d.command & 0x3)).toEqual([0, 0, 0]);
    step.value.enable();
    expect(step.value.placed).toEqual(atOnce);
    expect(b.bus.mapinfo()).toEqual(a.bus.mapinfo());
    a.bus.close();
    b.bus.close();
  });

  it('enableSteps turns decode on with the BARs parked, then maps one BAR a step, ending where enable() does', () => {
    const a = machine();
    const aDevs = [a.open(5, e1000eSpec()), a.open(4, rtl8139Spec()), a.open(6, ivshmemSpec())];
    const atOnce = placeBars(a.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
    const b = machine();
    const devs = [b.open(5, e1000eSpec()), b.open(4, rtl8139Spec()), b.open(6, ivshmemSpec())];
    const plan = runSteps(placeBarsSteps(b.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi }));
    expect(plan.placed).toEqual(atOnce);
    const barsMapped = (): string[] => [
      ...new Set(b.bus.mapinfo().flatMap((r) => (r.bdf === undefined ? [] : [`${r.bdf} ${r.bar}`]))),
    ];
    // Per function (devfn order: 4, 5, 6), a step that turns decode on and maps nothing, then a
    // step per BAR that maps that BAR alone.
    const perFunction = [4, 5, 6].map((slot) => atOnce.filter((p) => p.slot === slot && p.type !== 'rom'));
    expect(plan.enableSteps).toHaveLength(perFunction.reduce((n, bars) => n + 1 + bars.length, 0));
    let k = 0;
    for (const [i, bars] of perFunction.entries()) {
      const dev = devs[[1, 0, 2][i]];
      const before = barsMapped();
      transaction(plan.enableSteps[k++]);
      expect(dev.command & 0x3).not.toBe(0);
      expect(barsMapped()).toEqual(before);
      for (const p of bars) {
        const was = barsMapped();
        transaction(plan.enableSteps[k++]);
        expect(barsMapped().filter((x) => !was.includes(x))).toEqual([`${dev.bdf} ${p.bar}`]);
      }
    }
    expect(b.bus.mapinfo()).toEqual(a.bus.mapinfo());
    expect(devs.map((d) => d.configRead(0x3c, 1))).toEqual(aDevs.map((d) => d.configRead(0x3c, 1)));
    a.bus.close();
    b.bus.close();
  });

  it('enableEach turns decode on a function at a time, in devfn order, ending where enable() does', () => {
    const a = machine();
    a.open(5, e1000eSpec());
    a.open(4, rtl8139Spec());
    placeBars(a.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
    const b = machine();
    const e1000e = b.open(5, e1000eSpec());
    const rtl = b.open(4, rtl8139Spec());
    const plan = runSteps(placeBarsSteps(b.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi }));
    expect(plan.enableEach).toHaveLength(2);
    plan.enableEach[0]();
    expect([rtl.command & 0x3, e1000e.command & 0x3]).toEqual([expect.any(Number), 0]);
    expect(rtl.command & 0x3).not.toBe(0);
    expect(new Set(b.bus.mapinfo().flatMap((r) => (r.bdf === undefined ? [] : [r.bdf])))).toEqual(
      new Set([rtl.bdf]),
    );
    plan.enableEach[1]();
    expect(e1000e.command & 0x3).not.toBe(0);
    expect(b.bus.mapinfo()).toEqual(a.bus.mapinfo());
    a.bus.close();
    b.bus.close();
  });

  it("places the lab devices' BARs naturally aligned, largest first, and turns decode on", () => {
    const { bus, host, open } = machine();
    const e1000e = open(5, e1000eSpec());
    const rtl = open(4, rtl8139Spec());
    const ivshmem = open(6, ivshmemSpec());
    const placed = placeBars(host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
    const summary = placed.map((p) => [p.slot, p.bar, p.type, p.size, p.address]);
    expect(summary).toEqual([
      [4, 0, 'io', 0x100, 0xc000],
      [4, 1, 'mem32', 0x100, 0xc0144000],
      [5, 0, 'mem32', 0x20000, 0xc0100000],
      [5, 1, 'mem32', 0x20000, 0xc0120000],
      [5, 2, 'io', 0x20, 0xc100],
      [5, 3, 'mem32', 0x4000, 0xc0140000],
      [6, 0, 'mem32', 0x100, 0xc0145000],
      [6, 2, 'mem64', 0x100000, 0xc0000000],
    ]);
    // The devices now decode there: the bus has every BAR, and the sub-page BAR got a page of its own.
    expect(e1000e.command & 0x3).toBe(0x3);
    expect(rtl.command & 0x3).toBe(0x3);
    expect(ivshmem.command & 0x3).toBe(0x2);
    const ranges = bus.mapinfo();
    for (const p of placed) {
      const dev = { 4: rtl, 5: e1000e, 6: ivshmem }[p.slot] as VfioPciDevice;
      expect(ranges.some((r) => r.bdf === dev.bdf && r.bar === p.bar && r.addr === p.address)).toBe(true);
    }
    expect(rtl.bars[1]?.expanded).toBe(true);
    // Bus mastering stays for the driver to turn on.
    expect(e1000e.command & 0x4).toBe(0);
    expect(e1000e.configRead(0x3c, 1)).toBe(pciIntxGsi(5, 1));
    expect(rtl.configRead(0x3c, 1)).toBe(pciIntxGsi(4, 1));
    bus.close();
  });

  it('gives a ROM an address with its enable bit clear', () => {
    const { bus, host, open } = machine();
    const dev = open(3, { ...rtl8139Spec(), rom: new Uint8Array(0x8000) });
    const placed = placeBars(host);
    const rom = placed.find((p) => p.bar === 6);
    expect(rom).toMatchObject({ type: 'rom', size: 0x8000 });
    expect(dev.configRead(0x30, 4)).toBe(rom?.address);
    expect(dev.rom?.address).toBeNull();
    expect(placeBars(host, DEFAULT_PCI_WINDOWS, { roms: false }).some((p) => p.bar === 6)).toBe(false);
    bus.close();
  });

  it('moves a 64-bit BAR above 4 GiB when the 32-bit window is full, and refuses what fits nowhere', () => {
    const { bus, host, open } = machine();
    const dev = open(6, ivshmemSpec());
    const small = { mem32: { base: 0xfe000000, limit: 0xfe010000 }, io: DEFAULT_PCI_WINDOWS.io };
    expect(() => placeBars(host, small)).toThrow(
      /BAR 2 \(mem64, 0x100000 bytes\) does not fit in the mem32 window/,
    );
    expect(dev.configRead(0x18, 4)).toBe(0x0c); // nothing programmed
    const placed = placeBars(host, { ...small, mem64: { base: 2 ** 36, limit: 2 ** 37 } });
    expect(placed.find((p) => p.bar === 2)?.address).toBe(2 ** 36);
    expect(dev.configRead(0x1c, 4)).toBe(0x10);
    bus.close();
  });

  it('refuses malformed windows and bridges', () => {
    const host = new PciRootBus();
    expect(() => placeBars(host, { ...DEFAULT_PCI_WINDOWS, io: { base: 0x1000, limit: 0x20000 } })).toThrow(
      RangeError,
    );
    expect(() => placeBars(host, DEFAULT_PCI_WINDOWS, { minMemSize: 3000 })).toThrow(RangeError);
    const bridge: PciConfigTarget = { configRead: (o) => (o === 0x0e ? 0x01 : 0), configWrite: () => {} };
    host.attach(1, 0, bridge);
    expect(() => placeBars(host)).toThrow(/header type 1/);
  });

  it('never overlaps, aligns every BAR to its size and stays in the windows (property)', () => {
    const bar = fc.oneof(
      fc.record({
        size: fc.integer({ min: 4, max: 16 }).map((s) => 2 ** s),
        type: fc.constant('mem32' as const),
      }),
      fc.record({
        size: fc.integer({ min: 4, max: 24 }).map((s) => 2 ** s),
        type: fc.constant('mem64' as const),
      }),
      fc.record({
        size: fc.integer({ min: 2, max: 8 }).map((s) => 2 ** s),
        type: fc.constant('io' as const),
      }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.array(bar, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 6 }),
        (devices) => {
          const { bus, host, open } = machine();
          try {
            devices.forEach((bars, i) => {
              const specBars: (FakeBarSpec | null)[] = [];
              for (const b of bars) {
                specBars.push(b);
                if (b.type === 'mem64') specBars.push(null);
              }
              open(i + 1, {
                bdf: `0000:00:${(i + 1).toString(16).padStart(2, '0')}.0`,
                vendorId: 0x1234,
                deviceId: 0x11e8,
                bars: specBars,
              });
            });
            const placed = placeBars(host);
            const spans = placed.map((p) => ({
              io: p.type === 'io',
              start: p.address,
              end: p.address + (p.type === 'io' ? p.size : Math.max(p.size, 4096)),
              size: p.size,
            }));
            for (const s of spans) {
              expect(s.start % s.size).toBe(0);
              const w = s.io ? DEFAULT_PCI_WINDOWS.io : DEFAULT_PCI_WINDOWS.mem32;
              expect(s.start).toBeGreaterThanOrEqual(w.base);
              expect(s.end).toBeLessThanOrEqual(w.limit);
            }
            for (let i = 0; i < spans.length; i++) {
              for (let j = i + 1; j < spans.length; j++) {
                const [a, b] = [spans[i], spans[j]];
                if (a.io === b.io) expect(a.end <= b.start || b.end <= a.start).toBe(true);
              }
            }
            expect(placed.length).toBe(devices.flat().length);
          } finally {
            bus.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
