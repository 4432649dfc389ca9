// PciMsiRouting on a fake device and a fake KVM: routes and irqfds follow the guest's MSI/MSI-X
// setup, masked vectors are left to lib/pci's watcher (pending bit), and unmasking delivers.
import {
  GSI_TABLE,
  GuestErrorSink,
  MsiRoutes,
  type MsiMessage,
  type MsiRoutingTarget,
  PciMsiRouting,
  type Vm,
} from '../../../../lib';
import { type FakeIrqSpec, openIrqFake } from '../../pci/fake-irq';
import { placeBar } from '../../../support/pci-helpers';

const BAR3 = 0xfebf0000;

/**
 * A fake KVM with the kernel's eventfd semantics that matter here: while an irqfd is attached to
 * an eventfd, KVM consumes its signals (an exclusive, priority waiter) and lib/pci's watcher sees
 * nothing; without one, the watcher gets the interrupt.
 */
class FakeKvm implements MsiRoutingTarget {
  readonly routes = new Map<string, { msg: MsiMessage; fd: number }>();
  readonly log: string[] = [];
  /** Messages injected by KVM: through an irqfd, or by KVM_SIGNAL_MSI. */
  readonly injected: string[] = [];
  failOn: string | null = null;

  update(key: string, msg: MsiMessage | null, trigger?: { readonly fd: number }): void {
    if (key === this.failOn)
      throw Object.assign(new Error('KVM_SET_GSI_ROUTING: ENOSPC'), { code: 'ENOSPC' });
    if (msg === null) {
      if (this.routes.delete(key)) this.log.push(`del ${key}`);
      return;
    }
    this.routes.set(key, { msg: { ...msg }, fd: trigger?.fd ?? -1 });
    this.log.push(`set ${key} ${msg.addressLo.toString(16)}/${msg.data.toString(16)} fd ${trigger?.fd}`);
  }

  signalMsi(addressLo: number, addressHi: number, data: number): boolean {
    this.injected.push(`signal ${addressLo.toString(16)}:${addressHi}/${data.toString(16)}`);
    return true;
  }

  /** The device raises the vector whose trigger is `fd`, at the host `irq`. */
  raise(irq: { fds: number[]; fire(vector: number): void }, vector: number): void {
    const fd = irq.fds[vector];
    const r = [...this.routes.values()].find((x) => x.fd === fd);
    if (r) this.injected.push(`irqfd ${r.msg.addressLo.toString(16)}/${r.msg.data.toString(16)}`);
    else irq.fire(vector);
  }
}

function open(spec: Partial<FakeIrqSpec> = {}) {
  const { fake, bus, dev } = openIrqFake(spec);
  const kvm = new FakeKvm();
  // The routing reports to a sink it is given (a machine's); here one of the test's own.
  const errors: [string, string][] = [];
  const sink = new GuestErrorSink({ log: null });
  sink.on('guest-error', (e) => {
    expect(e).toMatchObject({ source: 'irq', kind: 'irq-route-failed', device: dev.bdf, action: 'ignored' });
    errors.push([e.where!, (e.error as Error).message]);
  });
  const routing = new PciMsiRouting(dev, kvm, { guestErrors: sink });
  return { fake, bus, dev, kvm, routing, errors };
}

describe('MSI', () => {
  const msi = { vectorsLog2: 2, is64: true, maskable: true };

  function enable(t: ReturnType<typeof open>, data = 0x4020): number {
    const cap = t.dev.irq.msi!.capOffset;
    t.dev.configWrite(cap + 4, 4, 0xfee00000);
    t.dev.configWrite(cap + 8, 4, 0);
    t.dev.configWrite(t.dev.irq.msi!.dataOffset, 2, data);
    t.dev.configWrite(cap + 2, 2, (2 << 4) | 1);
    return cap;
  }

  test('enabling routes every vector with its message and host eventfd; interrupts bypass JS', () => {
    const t = open({ msi });
    enable(t);
    const fds = t.dev.irq.host!.fds;
    expect([...t.kvm.routes]).toEqual(
      [0, 1, 2, 3].map((v) => [
        `0000:00:05.0 msi ${v}`,
        { msg: { addressLo: 0xfee00000, addressHi: 0, data: 0x4020 | v }, fd: fds[v] },
      ]),
    );
    expect(t.routing.routed).toBe(4);
    const js: number[] = [];
    t.dev.irq.on('interrupt', (v) => js.push(v));
    t.kvm.raise(t.fake.host(1)!, 2);
    expect(t.kvm.injected).toEqual(['irqfd fee00000/4022']);
    expect(js).toEqual([]);
  });

  test('nothing is routed, and INTx is not wired, before the guest enables MSI', () => {
    const t = open({ msi });
    t.dev.configWrite(t.dev.irq.msi!.capOffset + 4, 4, 0xfee00000);
    expect(t.kvm.log).toEqual([]);
    expect(t.dev.irq.mode).toBe('none');
    expect(t.fake.irqs.filter((h) => h.index === 0)).toEqual([]);
  });

  test('a masked vector loses its irqfd, its interrupt goes pending; unmask reroutes and injects once', () => {
    const t = open({ msi });
    const cap = enable(t);
    t.kvm.log.length = 0;
    t.dev.configWrite(cap + 0x10, 4, 0b0100);
    expect(t.kvm.log).toEqual(['del 0000:00:05.0 msi 2']);
    t.kvm.raise(t.fake.host(1)!, 2);
    expect(t.kvm.injected).toEqual([]);
    expect(t.dev.configRead(cap + 0x14, 4)).toBe(0b0100);
    t.dev.configWrite(cap + 0x10, 4, 0);
    expect(t.kvm.log.slice(1)).toEqual([`set 0000:00:05.0 msi 2 fee00000/4022 fd ${t.dev.irq.host!.fds[2]}`]);
    expect(t.kvm.injected).toEqual(['signal fee00000:0/4022']);
    expect(t.routing.injected).toBe(1);
    expect(t.dev.configRead(cap + 0x14, 4)).toBe(0);
    // Unmasked again, nothing pending: no second injection.
    t.dev.configWrite(cap + 0x10, 4, 0);
    expect(t.kvm.injected).toHaveLength(1);
  });

  test('a new message reprograms the route on the same eventfd', () => {
    const t = open({ msi });
    enable(t);
    t.kvm.log.length = 0;
    t.dev.configWrite(t.dev.irq.msi!.dataOffset, 2, 0x4030);
    expect(t.kvm.log).toEqual(
      [0, 1, 2, 3].map(
        (v) => `set 0000:00:05.0 msi ${v} fee00000/${(0x4030 | v).toString(16)} fd ${110 + v}`,
      ),
    );
  });

  test('disabling removes every route; re-enabling never keeps an irqfd across the switch', () => {
    const t = open({ msi });
    const cap = enable(t);
    t.dev.configWrite(cap + 2, 2, 0);
    expect(t.kvm.routes.size).toBe(0);
    expect(t.dev.irq.mode).toBe('none');
    t.kvm.log.length = 0;
    // Fewer vectors: the host is enabled again, and the fake hands out the same fd numbers.
    t.dev.configWrite(cap + 2, 2, (1 << 4) | 1);
    t.dev.configWrite(cap + 2, 2, (2 << 4) | 1);
    expect(t.kvm.log.filter((l) => l.startsWith('del'))).toEqual([
      'del 0000:00:05.0 msi 0',
      'del 0000:00:05.0 msi 1',
    ]);
    expect(t.kvm.routes.size).toBe(4);
  });

  test('KVM refusing a route is reported and counted, never thrown at the guest', () => {
    const t = open({ msi });
    t.kvm.failOn = '0000:00:05.0 msi 1';
    expect(() => enable(t)).not.toThrow();
    expect(t.kvm.routes.size).toBe(3);
    expect(t.routing.errors).toBeGreaterThan(0);
    expect(t.errors[0]).toEqual(['0000:00:05.0 msi 1', 'KVM_SET_GSI_ROUTING: ENOSPC']);
    t.kvm.failOn = null;
    t.dev.configWrite(t.dev.irq.msi!.dataOffset, 2, 0x4020);
    expect(t.kvm.routes.size).toBe(3);
    t.dev.configWrite(t.dev.irq.msi!.dataOffset, 2, 0x4024);
    expect(t.kvm.routes.size).toBe(4);
  });

  test('close removes the routes and stops following the guest', () => {
    const t = open({ msi });
    const cap = enable(t);
    t.routing.close();
    t.routing.close();
    expect(t.kvm.routes.size).toBe(0);
    t.dev.configWrite(cap + 0x10, 4, 0);
    t.dev.configWrite(t.dev.irq.msi!.dataOffset, 2, 0x4040);
    expect(t.kvm.routes.size).toBe(0);
    t.fake.host(1)!.fire(0);
    expect(t.kvm.injected).toEqual([]);
  });

  test('bad targets are programmer errors', () => {
    const { dev } = openIrqFake({ msi });
    expect(() => new PciMsiRouting(dev, {} as MsiRoutingTarget)).toThrow(TypeError);
    expect(() => new PciMsiRouting(dev, new FakeKvm(), { guestErrors: {} as never })).toThrow(TypeError);
  });
});

describe('MSI-X', () => {
  function setup() {
    const t = open();
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

  test('routes the unmasked entries; unmasking a higher one routes it on the grown host set', () => {
    const t = setup();
    program(t, 1, false);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    expect([...t.kvm.routes.keys()]).toEqual(['0000:00:05.0 msix 1']);
    program(t, 4, false);
    const fds = t.dev.irq.host!.fds;
    expect(fds).toHaveLength(5);
    expect(t.kvm.routes.get('0000:00:05.0 msix 4')).toEqual({
      msg: { addressLo: 0xfee00000, addressHi: 0, data: 0x4044 },
      fd: fds[4],
    });
    t.kvm.raise(t.fake.host(2)!, 4);
    expect(t.kvm.injected).toEqual(['irqfd fee00000/4044']);
  });

  test('the function mask drops every irqfd; clearing it restores them and injects what was pending', () => {
    const t = setup();
    program(t, 0, false);
    program(t, 2, false);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    expect(t.kvm.routes.size).toBe(2);
    t.dev.configWrite(ctl(t), 2, 0xc000);
    expect(t.kvm.routes.size).toBe(0);
    t.kvm.raise(t.fake.host(2)!, 2);
    expect(t.dev.msix!.isPending(2)).toBe(true);
    expect(t.kvm.injected).toEqual([]);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    expect(t.kvm.routes.size).toBe(2);
    expect(t.kvm.injected).toEqual(['signal fee00000:0/4042']);
    expect(t.dev.msix!.isPending(2)).toBe(false);
  });

  test('a masked entry goes pending in the PBA and is injected on unmask', () => {
    const t = setup();
    program(t, 0, false);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    t.bus.mmioWrite(entry(0) + 12, 4, 1);
    expect(t.kvm.routes.size).toBe(0);
    t.kvm.raise(t.fake.host(2)!, 0);
    expect(t.bus.mmioRead(BAR3 + 0x2000, 4)).toBe(1);
    t.bus.mmioWrite(entry(0) + 12, 4, 0);
    expect(t.kvm.routes.get('0000:00:05.0 msix 0')?.fd).toBe(t.dev.irq.host!.fds[0]);
    expect(t.kvm.injected).toEqual(['signal fee00000:0/4040']);
  });

  test('disabling MSI-X removes the routes and leaves no interrupt listener behind', () => {
    const t = setup();
    program(t, 0, false);
    t.dev.configWrite(ctl(t), 2, 0x8000);
    t.dev.configWrite(ctl(t), 2, 0);
    expect(t.kvm.routes.size).toBe(0);
    expect(t.dev.irq.mode).toBe('none');
  });
});

describe('MsiRoutes batches what one guest change does to every vector', () => {
  /** A Vm as MsiRoutes uses it: every routing table it installs, and the irqfds, in order. */
  function fakeVm() {
    const log: string[] = [];
    const vm = {
      closed: false,
      setGsiRouting(routes: { gsi: number; kind: string }[]) {
        log.push(
          `routing ${routes
            .filter((r) => r.kind === 'msi')
            .map((r) => r.gsi)
            .join(',')}`,
        );
      },
      irqfd(_fd: { fd: number }, gsi: number) {
        log.push(`irqfd ${gsi}`);
        return { release: () => log.push(`release ${gsi}`) };
      },
    };
    return { vm: vm as unknown as Vm, log };
  }

  /** A device with MSI routed through a batching MsiRoutes on fakeVm, the guest's four vectors enabled. */
  function enabledWithFourVectors() {
    const { dev } = openIrqFake({ msi: { vectorsLog2: 2, is64: true, maskable: true } });
    const { vm, log } = fakeVm();
    const routes = new MsiRoutes(vm);
    const routing = new PciMsiRouting(dev, {
      update: (k, m, t) => routes.update(k, m, t),
      signalMsi: () => true,
      batch: (fn) => routes.batch(fn),
    });
    const cap = dev.irq.msi!.capOffset;
    dev.configWrite(cap + 4, 4, 0xfee00000);
    dev.configWrite(cap + 8, 4, 0);
    dev.configWrite(dev.irq.msi!.dataOffset, 2, 0x4020);
    dev.configWrite(cap + 2, 2, (2 << 4) | 1);
    return { dev, log, routing, cap };
  }

  test('enabling MSI with four vectors installs the table once, then assigns the four irqfds', () => {
    const { dev, log, routing } = enabledWithFourVectors();
    expect(log).toEqual(['routing 24,25,26,27', 'irqfd 24', 'irqfd 25', 'irqfd 26', 'irqfd 27']);
    expect(routing.routed).toBe(4);
    // A new message for all four: one more table, the irqfds kept.
    log.length = 0;
    dev.configWrite(dev.irq.msi!.dataOffset, 2, 0x4030);
    expect(log).toEqual(['routing 24,25,26,27']);
  });

  test('a mode switch and close each change the table once, whatever the number of vectors', () => {
    const { dev, log, routing, cap } = enabledWithFourVectors();
    // Disabled: the four routes go in one table, their irqfds released.
    log.length = 0;
    dev.configWrite(cap + 2, 2, 0);
    expect(log.filter((l) => l.startsWith('routing'))).toEqual(['routing ']);
    expect(log.filter((l) => l.startsWith('release'))).toHaveLength(4);
    // Enabled again with four: one table, four irqfds.
    log.length = 0;
    dev.configWrite(cap + 2, 2, (2 << 4) | 1);
    const tables = log.filter((l) => l.startsWith('routing'));
    expect(tables).toHaveLength(1);
    expect(tables[0].slice(8).split(',').map(Number).sort()).toEqual([24, 25, 26, 27]);
    // Closed: one table for the four removals.
    log.length = 0;
    routing.close();
    expect(log.filter((l) => l.startsWith('routing'))).toEqual(['routing ']);
    expect(routing.routed).toBe(0);
  });

  test('outside a batch, each update installs its own table; a failed install is thrown once', () => {
    const { vm, log } = fakeVm();
    const routes = new MsiRoutes(vm);
    routes.update('a', { addressLo: 0xfee00000, addressHi: 0, data: 1 }, { fd: 5 });
    routes.update('b', { addressLo: 0xfee00000, addressHi: 0, data: 2 }, { fd: 6 });
    expect(log).toEqual(['routing 24', 'irqfd 24', 'routing 24,25', 'irqfd 25']);
    (vm as unknown as { setGsiRouting: () => void }).setGsiRouting = () => {
      throw new Error('ENOSPC');
    };
    expect(() =>
      routes.batch(() => {
        routes.update('a', null);
        routes.update('c', { addressLo: 0xfee00000, addressHi: 0, data: 3 }, { fd: 7 });
      }),
    ).toThrow('ENOSPC');
  });

  test('queued: each table goes to the thread pool in order, its irqfds after it; refusals are reported', async () => {
    const log: string[] = [];
    const sent: { routes: string; settle: (e?: Error) => void }[] = [];
    const vm = {
      closed: false,
      setGsiRoutingAsync(routes: { gsi: number; kind: string }[]) {
        const msi = routes.filter((r) => r.kind === 'msi').map((r) => r.gsi);
        log.push(`sent ${msi.join(',')}`);
        return new Promise<void>((resolve, reject) =>
          sent.push({ routes: msi.join(','), settle: (e) => (e ? reject(e) : resolve()) }),
        );
      },
      setGsiRouting() {
        throw new Error('a queued MsiRoutes never installs at once');
      },
      irqfd(_fd: { fd: number }, gsi: number) {
        log.push(`irqfd ${gsi}`);
        return { release: () => log.push(`release ${gsi}`) };
      },
    } as unknown as Vm;
    const refused: [string, string][] = [];
    const routes = new MsiRoutes(vm, { queued: (e, where) => refused.push([where, (e as Error).message]) });
    expect(routes.pending).toBeNull();
    routes.batch(() => {
      routes.update('a', { addressLo: 0xfee00000, addressHi: 0, data: 1 }, { fd: 5 });
      routes.update('b', { addressLo: 0xfee00000, addressHi: 0, data: 2 }, { fd: 6 });
    });
    // Sent, not in yet: no irqfd before its table, and the vCPU has something to wait for.
    expect(log).toEqual(['sent 24,25']);
    const first = routes.pending;
    expect(first).not.toBeNull();
    routes.update('a', null);
    expect(log).toEqual(['sent 24,25', 'sent 25']);
    sent[0].settle();
    await Promise.resolve();
    await Promise.resolve();
    // The first table is in: b's irqfd is assigned; a's was removed before it was ever assigned.
    expect(log).toEqual(['sent 24,25', 'sent 25', 'irqfd 25']);
    expect(routes.pending).not.toBeNull();
    sent[1].settle();
    await first;
    await routes.pending;
    expect(routes.pending).toBeNull();
    // A table KVM refuses is reported, not thrown; the irqfds after it are still tried.
    routes.update('c', { addressLo: 0xfee00000, addressHi: 0, data: 3 }, { fd: 7 });
    sent[2].settle(new Error('KVM_SET_GSI_ROUTING: ENOSPC'));
    await routes.pending;
    expect(refused).toEqual([[GSI_TABLE, 'KVM_SET_GSI_ROUTING: ENOSPC']]);
    expect(log.slice(-2)).toEqual(['sent 25,24', 'irqfd 24']);
    // A report that throws is a process warning; the vCPU's wait still ends.
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const throwing = new MsiRoutes(vm, {
      queued: () => {
        throw new Error('sink gone');
      },
    });
    throwing.update('e', { addressLo: 0xfee00000, addressHi: 0, data: 5 }, { fd: 9 });
    sent[3].settle(new Error('KVM_SET_GSI_ROUTING: EINVAL'));
    await throwing.pending;
    expect(warn.mock.calls.map((c) => c[0])).toEqual([
      'MsiRoutes: the queued option threw: Error: sink gone',
    ]);
    warn.mockRestore();
    sent.length = 3;
    // Closed VM: nothing is sent, nothing is reported.
    (vm as { closed: boolean }).closed = true;
    routes.update('d', { addressLo: 0xfee00000, addressHi: 0, data: 4 }, { fd: 8 });
    routes.clear();
    await routes.pending;
    expect(sent).toHaveLength(3);
    expect(refused).toHaveLength(1);
  });
});
