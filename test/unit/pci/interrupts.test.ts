// MSI, MSI-X and INTx virtualization on a fake device: typed changes, host vectors, emulated
// masking with pending bits, delivery on unmask, and bad guest writes.
import { once } from 'node:events';

import type { DeviceErrorEvent, PciIrqChange, PciIrqType } from '../../../lib/pci';
import { placeBar } from '../../support/pci-helpers';
import { type FakeIrqSpec, openIrqFake } from './fake-irq';

const BAR3 = 0xfebf0000;

function open(spec: Partial<FakeIrqSpec> = {}) {
  const { fake, bus, dev } = openIrqFake(spec);
  const got: [number, number, PciIrqType][] = [];
  const changes: PciIrqChange[] = [];
  const errors: DeviceErrorEvent[] = [];
  dev.on('device-error', (e) => errors.push(e));
  dev.irq.on('change', (c) => changes.push(c));
  return {
    fake,
    bus,
    dev,
    got,
    changes,
    errors,
    listen() {
      dev.irq.on('interrupt', (v, n, t) => got.push([v, n, t]));
    },
  };
}

describe('MSI', () => {
  const msi = { vectorsLog2: 2, is64: true, maskable: true };

  function enable(t: ReturnType<typeof open>, log2 = 2): number {
    const cap = t.dev.irq.msi!.capOffset;
    t.dev.configWrite(cap + 4, 4, 0xfee00000);
    t.dev.configWrite(cap + 8, 4, 0);
    t.dev.configWrite(t.dev.irq.msi!.dataOffset, 2, 0x4020);
    t.dev.configWrite(cap + 2, 2, (log2 << 4) | 1);
    return cap;
  }

  test('finds the capability and emulates it whole, with the device read-only fields', () => {
    const t = open({ msi });
    const m = t.dev.irq.msi!;
    expect([m.capOffset, m.capable, m.is64, m.maskable, m.dataOffset, m.maskOffset, m.pendingOffset]).toEqual(
      [0x70, 4, true, true, 0x7c, 0x80, 0x84],
    );
    expect(t.dev.configRead(0x72, 2)).toBe(0x184);
    // The guest cannot change what the device can do, nor the pending bits.
    t.dev.configWrite(0x72, 2, 0xffff & ~1);
    expect(t.dev.configRead(0x72, 2)).toBe(0x184 | 0x70);
    t.dev.configWrite(0x84, 4, 0xf);
    expect(t.dev.configRead(0x84, 4)).toBe(0);
  });

  test('enable: host vectors, typed changes with per-vector data', () => {
    const t = open({ msi });
    t.listen();
    enable(t);
    expect(t.dev.irq.mode).toBe('msi');
    expect(t.fake.host(1)?.vectors).toBe(4);
    expect(t.fake.host(0)?.closed ?? true).toBe(true);
    expect(t.changes.filter((c) => c.kind === 'mode').at(-1)).toEqual({
      kind: 'mode',
      mode: 'msi',
      vectors: 4,
    });
    expect(t.changes.filter((c) => c.kind === 'vector')).toEqual(
      [0, 1, 2, 3].map((v) => ({
        kind: 'vector',
        type: 'msi',
        vector: v,
        address: 0xfee00000n,
        data: 0x4020 | v,
        masked: false,
      })),
    );
    t.fake.host(1)!.fire(2, 3);
    expect(t.got).toEqual([[2, 3, 'msi']]);
  });

  test('a masked vector sets its pending bit; unmasking delivers it once', () => {
    const t = open({ msi });
    t.listen();
    const cap = enable(t);
    t.dev.configWrite(cap + 0x10, 4, 0b0100);
    expect(t.changes.at(-1)).toMatchObject({ kind: 'vector', vector: 2, masked: true });
    t.fake.host(1)!.fire(2, 5);
    expect(t.got).toEqual([]);
    expect(t.dev.configRead(cap + 0x14, 4)).toBe(0b0100);
    expect(t.dev.irq.msi!.isPending(2)).toBe(true);
    t.dev.configWrite(cap + 0x10, 4, 0);
    expect(t.got).toEqual([[2, 1, 'msi']]);
    expect(t.dev.configRead(cap + 0x14, 4)).toBe(0);
    t.dev.configWrite(cap + 0x10, 4, 0);
    expect(t.got).toHaveLength(1);
  });

  test('changing the vector count re-enables the host; disable goes back to INTx', () => {
    const t = open({ msi });
    t.listen();
    const cap = enable(t, 1);
    expect(t.fake.host(1)?.vectors).toBe(2);
    t.dev.configWrite(cap + 2, 2, (2 << 4) | 1);
    expect(t.fake.host(1)?.vectors).toBe(4);
    // More than the device can send is capped at what it can.
    t.dev.configWrite(cap + 2, 2, (5 << 4) | 1);
    expect(t.dev.irq.msi!.vectors).toBe(4);
    t.dev.configWrite(cap + 2, 2, 0);
    expect(t.dev.irq.mode).toBe('intx');
    expect(t.fake.host(1)).toBeUndefined();
    expect(t.fake.host(0)?.enabled).toBe(true);
  });

  test('out-of-range vectors are RangeErrors for the VMM', () => {
    const t = open({ msi });
    expect(() => t.dev.irq.msi!.vector(4)).toThrow(RangeError);
    expect(() => t.dev.irq.message('msi', 9)).toThrow(RangeError);
  });
});

describe('MSI-X', () => {
  function setup(opts: { listen?: boolean } = {}) {
    const t = open();
    if (opts.listen !== false) t.listen();
    placeBar(t.dev, 3, BAR3);
    t.dev.configWrite(0x04, 2, 0x0006);
    return t;
  }
  const entry = (v: number): number => BAR3 + 16 * v;
  function program(t: ReturnType<typeof open>, v: number, masked: boolean): void {
    t.bus.mmioWrite(entry(v), 8, 0xfee00000n);
    t.bus.mmioWrite(entry(v) + 8, 4, 0x4040 + v);
    t.bus.mmioWrite(entry(v) + 12, 4, masked ? 1 : 0);
  }
  const ctl = (t: ReturnType<typeof open>): number => t.dev.msix!.capOffset + 2;

  test('enable: host vectors up to the highest unmasked entry; typed changes', () => {
    const t = setup();
    program(t, 3, false);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    expect(t.dev.irq.mode).toBe('msix');
    expect(t.fake.host(2)?.vectors).toBe(4);
    expect(t.changes.filter((c) => c.kind === 'vector')).toEqual([
      { kind: 'vector', type: 'msix', vector: 3, address: 0xfee00000n, data: 0x4043, masked: false },
    ]);
    t.fake.host(2)!.fire(3, 2);
    expect(t.got).toEqual([[3, 2, 'msix']]);
  });

  test('nothing unmasked still enables one vector; unmasking a higher one grows the host set', () => {
    const t = setup();
    t.dev.configWrite(ctl(t), 2, 0x8000);
    expect(t.fake.host(2)?.vectors).toBe(1);
    program(t, 4, false);
    expect(t.fake.host(2)?.resizes).toEqual([5]);
    t.fake.host(2)!.fire(4);
    expect(t.got).toEqual([[4, 1, 'msix']]);
  });

  test('masked: the pending bit shows in the PBA overlay; unmask delivers and clears it', () => {
    const t = setup();
    program(t, 1, true);
    program(t, 0, false);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    t.fake.host(2)!.fire(0);
    expect(t.got).toEqual([[0, 1, 'msix']]);
    t.bus.mmioWrite(entry(0) + 12, 4, 1);
    t.fake.host(2)!.fire(0, 7);
    expect(t.got).toHaveLength(1);
    expect(t.bus.mmioRead(BAR3 + 0x2000, 4)).toBe(1);
    // The PBA is read-only to the guest.
    t.bus.mmioWrite(BAR3 + 0x2000, 4, 0);
    expect(t.dev.msix!.isPending(0)).toBe(true);
    t.bus.mmioWrite(entry(0) + 12, 4, 0);
    expect(t.got).toEqual([
      [0, 1, 'msix'],
      [0, 1, 'msix'],
    ]);
    expect(t.dev.msix!.isPending(0)).toBe(false);
  });

  test('the function mask holds every vector; clearing it delivers the pending ones', () => {
    const t = setup();
    program(t, 0, false);
    program(t, 2, false);
    t.dev.configWrite(ctl(t), 2, 0xc000);
    t.fake.host(2)!.fire(0);
    t.fake.host(2)!.fire(2);
    expect(t.got).toEqual([]);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    expect(t.got).toEqual([
      [0, 1, 'msix'],
      [2, 1, 'msix'],
    ]);
  });

  test('disable returns to INTx for a listener and to nothing without one', () => {
    const t = setup();
    t.dev.configWrite(ctl(t), 2, 0x8000);
    t.dev.configWrite(ctl(t), 2, 0);
    expect(t.dev.irq.mode).toBe('intx');
    const u = setup({ listen: false });
    u.dev.configWrite(ctl(u), 2, 0x8000);
    u.dev.configWrite(ctl(u), 2, 0);
    expect(u.dev.irq.mode).toBe('none');
    expect(u.fake.irqs.every((h) => h.closed)).toBe(true);
  });

  test('bad guest writes are reported, never thrown: odd widths, outside the table', () => {
    const t = setup();
    program(t, 0, false);
    const unassigned: unknown[] = [];
    t.bus.memory.on('unassigned', (e) => unassigned.push(e));
    t.bus.mmioWrite(entry(0) + 8, 2, 0x1234);
    t.bus.mmioWrite(entry(0) + 9, 1, 0x12);
    expect(t.dev.msix!.vector(0).data).toBe(0x4040);
    expect(unassigned).toHaveLength(2);
    expect(() => t.dev.msix!.vector(5)).toThrow(RangeError);
  });

  test('enabling MSI and MSI-X at once is reported, and MSI-X stays in charge', () => {
    const t = open({ msi: { vectorsLog2: 0, is64: false, maskable: false } });
    t.listen();
    placeBar(t.dev, 3, BAR3);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    const cap = t.dev.irq.msi!.capOffset;
    t.dev.configWrite(cap + 2, 2, 1);
    expect(t.dev.irq.mode).toBe('msix');
    expect(t.errors.map((e) => [e.reason, e.where])).toEqual([['irq', 'MSI enable while MSI-X is enabled']]);
  });
});

describe('INTx', () => {
  test('wired on the first listener; eoi() unmasks; INTx-disable holds the line back', () => {
    const t = open();
    expect(t.dev.irq.mode).toBe('none');
    t.listen();
    expect(t.dev.irq.mode).toBe('intx');
    const host = t.fake.host(0)!;
    host.fire(0);
    expect(t.got).toEqual([[0, 1, 'intx']]);
    t.dev.irq.eoi();
    expect(host.unmasks).toEqual([0]);
    t.dev.configWrite(0x04, 2, 0x0400);
    host.fire(0);
    expect(t.got).toHaveLength(1);
    t.dev.configWrite(0x04, 2, 0);
    expect(t.got).toEqual([
      [0, 1, 'intx'],
      [0, 1, 'intx'],
    ]);
  });

  test('the last listener leaving unwires INTx on the host', () => {
    const t = open();
    const a = (): void => undefined;
    const b = (): void => undefined;
    t.dev.irq.on('interrupt', a).on('interrupt', b);
    const host = t.fake.host(0)!;
    t.dev.irq.off('interrupt', a);
    expect([t.dev.irq.mode, host.closed]).toEqual(['intx', false]);
    t.dev.irq.off('interrupt', b);
    expect([t.dev.irq.mode, host.closed]).toEqual(['none', true]);
    expect(t.changes.at(-1)).toEqual({ kind: 'mode', mode: 'none', vectors: 0 });
  });

  test('no pin, no INTx; unref and ref reach the host', () => {
    const t = open({ pin: 0 });
    t.listen();
    expect(t.dev.irq.mode).toBe('none');
    const u = open();
    u.dev.irq.unref();
    u.listen();
    expect(u.fake.host(0)?.refed).toBe(false);
    u.dev.irq.ref();
    expect(u.fake.host(0)?.refed).toBe(true);
  });

  test('REQ is wired unref()ed when someone listens, and fires the event', () => {
    const t = open();
    let n = 0;
    t.dev.irq.on('req', () => n++);
    const req = t.fake.host(4)!;
    expect(req.refed).toBe(false);
    req.fire(0);
    expect(n).toBe(1);
    t.dev.close();
    expect(req.closed).toBe(true);
  });
});

describe('INTx for a router (routeIntx)', () => {
  const msi = { vectorsLog2: 0, is64: false, maskable: false };

  test('wires INTx with no listener, handing VFIO the resample eventfd; withdrawing unwires it', () => {
    const t = open();
    const withdraw = t.dev.irq.routeIntx({ resample: 77 });
    expect(t.dev.irq.mode).toBe('intx');
    const host = t.fake.host(0)!;
    expect(host.opts.resample).toBe(77);
    expect(t.dev.irq.host).toBe(host);
    expect(t.changes.at(-1)).toEqual({ kind: 'mode', mode: 'intx', vectors: 1 });
    withdraw();
    expect([t.dev.irq.mode, host.closed]).toEqual(['none', true]);
    withdraw();
    expect(t.fake.irqs.filter((h) => h.index === 0)).toHaveLength(1);
  });

  test('listeners and a route share INTx; the route re-enables it with, then without, the resample', () => {
    const t = open();
    t.listen();
    const jsOnly = t.fake.host(0)!;
    expect(jsOnly.opts.resample).toBeUndefined();
    const withdraw = t.dev.irq.routeIntx({ resample: 77 });
    const routed = t.fake.host(0)!;
    expect([jsOnly.closed, routed.opts.resample]).toEqual([true, 77]);
    // Interrupts KVM did not take still reach the listeners.
    routed.fire(0);
    expect(t.got).toEqual([[0, 1, 'intx']]);
    withdraw();
    const back = t.fake.host(0)!;
    expect([routed.closed, t.dev.irq.mode, back.opts.resample]).toEqual([true, 'intx', undefined]);
  });

  test('the last listener leaving keeps a routed INTx', () => {
    const t = open();
    const fn = (): void => undefined;
    t.dev.irq.on('interrupt', fn);
    t.dev.irq.routeIntx({ resample: 77 });
    const host = t.fake.host(0)!;
    t.dev.irq.off('interrupt', fn);
    expect([t.dev.irq.mode, host.closed]).toEqual(['intx', false]);
  });

  test('MSI off and a guest-visible reset bring the routed INTx back; in MSI it waits', () => {
    const t = open({ msi, resets: { device: true, hot: false } });
    const cap = (): number => t.dev.irq.msi!.capOffset;
    t.dev.configWrite(cap() + 2, 2, 1);
    expect(t.dev.irq.mode).toBe('msi');
    t.dev.irq.routeIntx({ resample: 77 });
    expect([t.dev.irq.mode, t.fake.host(0)]).toEqual(['msi', undefined]);
    t.dev.configWrite(cap() + 2, 2, 0);
    expect([t.dev.irq.mode, t.fake.host(0)?.opts.resample]).toEqual(['intx', 77]);
    const before = t.fake.host(0)!;
    t.dev.reset('guest');
    expect([before.closed, t.dev.irq.mode, t.fake.host(0)?.opts.resample]).toEqual([true, 'intx', 77]);
  });

  test('one route at a time; a request needs its resample; a device without a pin stays off', () => {
    const t = open();
    t.dev.irq.routeIntx({ resample: 77 });
    expect(() => t.dev.irq.routeIntx({ resample: 78 })).toThrow(RangeError);
    expect(t.fake.host(0)?.opts.resample).toBe(77);
    expect(() => t.dev.irq.routeIntx({} as never)).toThrow(TypeError);
    expect(() => t.dev.irq.routeIntx(null as never)).toThrow(TypeError);
    const u = open({ pin: 0 });
    u.dev.irq.routeIntx({ resample: 77 });
    expect(u.dev.irq.mode).toBe('none');
    t.dev.close();
    expect(() => t.dev.irq.routeIntx({ resample: 77 })).toThrow(/closed/);
  });
});

describe('node:events', () => {
  test("events.once on 'interrupt' wires INTx for one interrupt, then unwires it", async () => {
    const t = open();
    const next = once(t.dev.irq, 'interrupt');
    const host = t.fake.host(0)!;
    expect(t.dev.irq.mode).toBe('intx');
    host.fire(0, 3);
    expect(await next).toEqual([0, 3, 'intx']);
    expect([t.dev.irq.mode, host.closed]).toEqual(['none', true]);
  });

  test("events.once on 'device-error' and 'change' resolve with the event", async () => {
    const t = open();
    const change = once(t.dev.irq, 'change');
    t.listen();
    expect(await change).toEqual([{ kind: 'mode', mode: 'intx', vectors: 1 }]);
    const error = once(t.dev, 'device-error');
    t.dev.configRead(0x100, 4);
    const [e] = (await error) as [DeviceErrorEvent];
    expect(e).toMatchObject({ bdf: t.dev.bdf, isWrite: false, offset: 0x100 });
  });
});
