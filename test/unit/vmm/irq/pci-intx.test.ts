// PciIntxRouting on a fake device, a fake KVM and a model of vfio-pci's INTx: the trigger follows
// lib/pci's host INTx onto a resample irqfd, the guest's EOI unmasks through the resample eventfd,
// mode switches and resets rewire, an INTx signalled before the irqfd exists is not lost, and
// guest-caused KVM failures are reported.
import { type Assignment, type HasFd, type IntxRoutingTarget, PciIntxRouting } from '../../../../lib';
import { PciMsiRouting } from '../../../../lib';
import type { PciIrqType } from '../../../../lib/pci';
import { type FakeHostIrq, type FakeIrqDevice, type FakeIrqSpec, openIrqFake } from '../../pci/fake-irq';

const GSI = 16;
const RESAMPLE = { fd: 77 };

/** KVM's side: resample irqfds on GSIs and the level of each line. */
class FakeVm implements IntxRoutingTarget {
  readonly irqfds: { fd: number; gsi: number; resample: number }[] = [];
  readonly log: string[] = [];
  readonly level = new Map<number, number>();
  /** How often a trigger raised a line. */
  raised = 0;
  failAssign: Error | null = null;
  failRelease: Error | null = null;
  /** Whether eventfd `fd` holds a count (the kernel model says). */
  pending: (fd: number) => boolean = () => false;

  irqfd(eventfd: HasFd, gsi: number, opts: { resample?: HasFd }): Assignment {
    if (this.failAssign) throw this.failAssign;
    const a = { fd: eventfd.fd, gsi, resample: opts.resample?.fd ?? -1 };
    this.irqfds.push(a);
    this.log.push(`assign ${a.fd} gsi ${gsi} resample ${a.resample}`);
    // KVM_IRQFD polls the eventfd once it is attached: a signal from before is injected.
    if (this.pending(a.fd)) this.#raise(gsi);
    return {
      kind: 'irqfd',
      fd: a.fd,
      target: gsi,
      release: () => {
        if (this.failRelease) throw this.failRelease;
        const i = this.irqfds.indexOf(a);
        if (i < 0) return;
        this.irqfds.splice(i, 1);
        this.log.push(`release ${a.fd} gsi ${gsi}`);
        // The resampler goes with its last irqfd, lowering the line.
        if (!this.irqfds.some((x) => x.gsi === gsi)) this.level.set(gsi, 0);
      },
    };
  }

  /** Trigger `fd` is signalled: true when an irqfd consumed it (the watcher then sees nothing). */
  signal(fd: number): boolean {
    const a = this.irqfds.find((x) => x.fd === fd);
    if (!a) return false;
    this.#raise(a.gsi);
    return true;
  }

  /** The guest EOIs `gsi`: a raised line is lowered and the resample eventfds are signalled. */
  eoi(gsi: number): number[] {
    if (this.level.get(gsi) !== 1) return [];
    this.level.set(gsi, 0);
    return this.irqfds.filter((x) => x.gsi === gsi).map((x) => x.resample);
  }

  #raise(gsi: number): void {
    this.level.set(gsi, 1);
    this.raised++;
  }
}

/**
 * vfio-pci's INTx as the kernel runs it (vfio_intx_handler, vfio_pci_intx_unmask): each interrupt
 * masks INTx and signals the trigger; an unmask while the device still asserts signals it again
 * and stays masked. A newly enabled INTx starts unmasked and fires at once if the device asserts.
 */
class IntxKernel {
  asserted = false;
  masked = false;
  /** The trigger eventfd's counter, as lib/pci's watcher would read it. */
  count = 0;
  host: FakeHostIrq | null = null;

  constructor(
    fake: FakeIrqDevice,
    readonly vm: FakeVm,
  ) {
    const enable = fake.enableIrq.bind(fake);
    fake.enableIrq = (index, opts) => {
      const h = enable(index, opts);
      if (index !== 0) return h;
      this.host = h;
      this.masked = false;
      this.count = 0;
      const unmask = h.unmask.bind(h);
      h.unmask = (v = 0) => {
        unmask(v);
        this.unmask();
      };
      if (this.asserted) this.#interrupt();
      return h;
    };
    vm.pending = (fd) => this.host !== null && !this.host.closed && this.host.fds[0] === fd && this.count > 0;
  }

  raise(): void {
    this.asserted = true;
    if (!this.masked) this.#interrupt();
  }

  ack(): void {
    this.asserted = false;
  }

  unmask(): void {
    if (!this.masked) return;
    if (this.asserted) this.#signal();
    else this.masked = false;
  }

  /** The guest EOIs the line: KVM's resample eventfd reaches VFIO as an unmask. */
  eoi(gsi = GSI): void {
    if (this.vm.eoi(gsi).includes(RESAMPLE.fd)) this.unmask();
  }

  /** One turn of the event loop: lib/pci's watcher reads what KVM left in the eventfd. */
  loop(): void {
    const h = this.host;
    if (!h || h.closed || this.count === 0) return;
    const n = this.count;
    this.count = 0;
    h.fire(0, n);
  }

  #interrupt(): void {
    this.masked = true;
    this.#signal();
  }

  #signal(): void {
    const h = this.host;
    if (h && !h.closed && !this.vm.signal(h.fds[0])) this.count++;
  }
}

function open(spec: Partial<FakeIrqSpec> = {}, listen = false) {
  const { fake, bus, dev } = openIrqFake(spec);
  const vm = new FakeVm();
  const kernel = new IntxKernel(fake, vm);
  const got: [number, number, PciIrqType][] = [];
  if (listen) dev.irq.on('interrupt', (v, n, t) => got.push([v, n, t]));
  // The routing reports to the device's sink by default: KVM's refusals are its `irq` reports.
  const errors: string[] = [];
  dev.guestErrors.on('guest-error', (e) => {
    if (e.source === 'irq') errors.push((e.error as Error).message);
  });
  const route = (): PciIntxRouting => new PciIntxRouting(dev, vm, GSI, { resample: RESAMPLE });
  return { fake, bus, dev, vm, kernel, got, errors, route };
}

const msi = { vectorsLog2: 0, is64: false, maskable: false };

function enableMsi(dev: ReturnType<typeof open>['dev'], on: boolean): void {
  const cap = dev.irq.msi!.capOffset;
  dev.configWrite(cap + 4, 4, 0xfee00000);
  dev.configWrite(cap + 8, 2, 0x4021);
  dev.configWrite(cap + 2, 2, on ? 1 : 0);
}

describe('PciIntxRouting', () => {
  test('puts the INTx trigger on a resample irqfd, with no JS listener; the guest EOI unmasks', () => {
    const t = open();
    const r = t.route();
    expect(t.dev.irq.mode).toBe('intx');
    const host = t.fake.host(0)!;
    expect(host.opts.resample).toBe(RESAMPLE.fd);
    expect(t.vm.irqfds).toEqual([{ fd: host.fds[0], gsi: GSI, resample: RESAMPLE.fd }]);
    expect([r.wired, r.gsi, r.resampleFd, r.errors]).toEqual([true, GSI, RESAMPLE.fd, 0]);
    // QEMU's "let 'em rip": one unmask at VFIO once the irqfd is in place.
    expect(host.unmasks).toEqual([0]);

    const js: number[] = [];
    t.dev.irq.on('interrupt', (v) => js.push(v));
    t.kernel.raise();
    t.kernel.loop();
    expect([t.vm.level.get(GSI), t.vm.raised, js]).toEqual([1, 1, []]);
    // Masked at VFIO until the guest's EOI: a new assertion goes nowhere.
    t.kernel.ack();
    t.kernel.raise();
    expect([t.kernel.masked, t.vm.raised]).toEqual([true, 1]);
    // EOI with the device still asserting: the line comes straight back.
    t.kernel.eoi();
    expect([t.vm.level.get(GSI), t.vm.raised, t.kernel.masked]).toEqual([1, 2, true]);
    // Serviced, then EOI: unmasked, and the next interrupt arrives the same way.
    t.kernel.ack();
    t.kernel.eoi();
    expect([t.vm.level.get(GSI), t.kernel.masked]).toEqual([0, false]);
    t.kernel.raise();
    t.kernel.loop();
    expect([t.vm.raised, js]).toEqual([3, []]);
  });

  test('MSI enable releases the irqfd; MSI disable wires the new trigger', () => {
    const t = open({ msi });
    const r = t.route();
    const msiRouting = new PciMsiRouting(t.dev, { update: () => undefined, signalMsi: () => true });
    const first = t.fake.host(0)!;
    t.kernel.raise();
    expect(t.vm.level.get(GSI)).toBe(1);
    enableMsi(t.dev, true);
    expect([t.dev.irq.mode, first.closed, r.wired]).toEqual(['msi', true, false]);
    expect(t.vm.irqfds).toEqual([]);
    // Releasing the last irqfd of the GSI lowered its line, as KVM's resampler does.
    expect(t.vm.level.get(GSI)).toBe(0);
    enableMsi(t.dev, false);
    const second = t.fake.host(0)!;
    expect([t.dev.irq.mode, second === first, second.opts.resample, r.wired]).toEqual([
      'intx',
      false,
      RESAMPLE.fd,
      true,
    ]);
    expect(t.vm.log).toEqual([
      `assign ${first.fds[0]} gsi ${GSI} resample ${RESAMPLE.fd}`,
      `release ${first.fds[0]} gsi ${GSI}`,
      `assign ${second.fds[0]} gsi ${GSI} resample ${RESAMPLE.fd}`,
    ]);
    // The device still asserted its INTx: the new enable fired it, and KVM took it.
    expect(t.vm.level.get(GSI)).toBe(1);
    msiRouting.close();
    expect(t.dev.irq.mode).toBe('intx');
    r.close();
  });

  test('a guest-visible reset rewires the new host INTx; a recovery reset keeps the irqfd', () => {
    const t = open({ resets: { device: true, hot: false } });
    const r = t.route();
    const first = t.fake.host(0)!;
    t.dev.reset('guest');
    const second = t.fake.host(0)!;
    expect([first.closed, second === first, second.opts.resample, r.wired]).toEqual([
      true,
      false,
      RESAMPLE.fd,
      true,
    ]);
    expect(t.vm.log.slice(1)).toEqual([
      `release ${first.fds[0]} gsi ${GSI}`,
      `assign ${second.fds[0]} gsi ${GSI} resample ${RESAMPLE.fd}`,
    ]);
    expect(second.unmasks).toEqual([0]);
    t.vm.log.length = 0;
    t.dev.reset('recover');
    // The host INTx was disabled and enabled again with the same eventfds: the irqfd stays valid.
    expect([t.fake.host(0) === second, second.enabled, t.vm.log, t.vm.irqfds.length]).toEqual([
      true,
      true,
      [],
      1,
    ]);
  });

  test('an INTx signalled before the irqfd exists is not lost', () => {
    // The device asserts while a JS listener has INTx: lib/pci's watcher takes it, VFIO masks.
    const t = open({}, true);
    t.kernel.raise();
    t.kernel.loop();
    expect([t.got, t.kernel.masked]).toEqual([[[0, 1, 'intx']], true]);
    // Routing enables INTx again with the resample eventfd; the still asserted line fires before
    // the irqfd is assigned, and KVM injects it when the irqfd is attached.
    const r = t.route();
    expect([r.wired, t.vm.level.get(GSI)]).toEqual([true, 1]);
    // The watcher also reads the count KVM left behind: a second look at a level, nothing lost.
    t.kernel.loop();
    expect(t.got).toHaveLength(2);
    t.kernel.ack();
    t.kernel.eoi();
    expect([t.kernel.masked, t.vm.level.get(GSI)]).toEqual([false, 0]);
    // Withdrawn: INTx goes back to the listener, enabled again without the resample eventfd.
    r.close();
    expect([t.dev.irq.mode, t.fake.host(0)?.opts.resample]).toEqual(['intx', undefined]);
    t.kernel.raise();
    t.kernel.loop();
    expect(t.got).toHaveLength(3);
  });

  test("an interrupt left to lib/pci's watcher while KVM refused the irqfd reaches KVM on the next enable", () => {
    // The first assignment fails: the interrupt goes to lib/pci's watcher, VFIO stays masked.
    const t = open({ msi });
    t.vm.failAssign = Object.assign(new Error('KVM_IRQFD: EBUSY'), { code: 'EBUSY' });
    const r = t.route();
    t.kernel.raise();
    t.kernel.loop();
    expect([r.wired, t.kernel.masked, t.vm.raised]).toEqual([false, true, 0]);
    // The guest goes to MSI and back: the new INTx is wired, and the still asserting device reaches KVM.
    t.vm.failAssign = null;
    enableMsi(t.dev, true);
    enableMsi(t.dev, false);
    expect([r.wired, t.vm.level.get(GSI)]).toEqual([true, 1]);
  });

  test('guest-caused KVM failures are reported and counted, never thrown', () => {
    const t = open({ msi });
    t.vm.failAssign = Object.assign(new Error('KVM_IRQFD: EINVAL'), { code: 'EINVAL' });
    const r = t.route();
    expect([r.wired, r.errors, t.errors]).toEqual([false, 1, ['KVM_IRQFD: EINVAL']]);
    t.vm.failAssign = null;
    enableMsi(t.dev, true);
    enableMsi(t.dev, false);
    expect([r.wired, r.errors]).toEqual([true, 1]);
    t.vm.failRelease = Object.assign(new Error('KVM_IRQFD: EBADF'), { code: 'EBADF' });
    expect(() => enableMsi(t.dev, true)).not.toThrow();
    expect([t.dev.irq.mode, r.wired, r.errors, t.errors[1]]).toEqual(['msi', false, 2, 'KVM_IRQFD: EBADF']);
    expect(() => r.close()).not.toThrow();
    expect(r.errors).toBe(2);
  });

  test("lib/pci's failure to enable INTx is lib/pci's report; nothing is wired", () => {
    const t = open();
    const reports: string[] = [];
    t.dev.guestErrors.on('guest-error', (e) => {
      if (e.source === 'pci') reports.push(`${e.kind} ${e.where}`);
    });
    t.fake.enableIrq = () => {
      throw Object.assign(new Error('VFIO_DEVICE_SET_IRQS: EINVAL'), { name: 'VfioError', code: 'EINVAL' });
    };
    const r = t.route();
    expect([t.dev.irq.mode, t.dev.irq.host, r.wired, r.errors, reports]).toEqual([
      'intx',
      null,
      false,
      0,
      ['irq-setup interrupts: enable intx'],
    ]);
  });

  test("the guest's INTx-disable bit goes to the device's config space, where vfio-pci masks INTx", () => {
    const t = open();
    t.route();
    t.fake.take();
    t.dev.configWrite(0x04, 2, 0x0400);
    expect(t.fake.take().filter((a) => a.isWrite)).toEqual([
      { via: 'fd', region: 7, offset: 0x04, size: 2, isWrite: true, value: 0x0400 },
    ]);
    expect(t.vm.log).toHaveLength(1);
  });

  test('close releases the irqfd and unwires INTx; idempotent; using does it too', () => {
    const t = open({ msi });
    const r = t.route();
    const host = t.fake.host(0)!;
    r.close();
    expect([t.vm.irqfds, t.dev.irq.mode, host.closed, r.wired]).toEqual([[], 'none', true, false]);
    r.close();
    enableMsi(t.dev, true);
    enableMsi(t.dev, false);
    expect([t.vm.irqfds, t.dev.irq.mode]).toEqual([[], 'none']);
    {
      using u = t.route();
      expect(u.wired).toBe(true);
    }
    expect([t.vm.irqfds, t.dev.irq.mode]).toEqual([[], 'none']);
    // After the device closed, closing the routing still releases its irqfd.
    const last = t.route();
    t.dev.close();
    last.close();
    expect(t.vm.irqfds).toEqual([]);
  });

  test('programmer errors: bad target, GSI, resample, no pin, a second routing', () => {
    const t = open();
    expect(() => new PciIntxRouting(t.dev, {} as IntxRoutingTarget, GSI)).toThrow(TypeError);
    for (const gsi of [-1, 1.5, 2 ** 32])
      expect(() => new PciIntxRouting(t.dev, t.vm, gsi)).toThrow(RangeError);
    expect(() => new PciIntxRouting(t.dev, t.vm, GSI, { resample: { fd: -1 } })).toThrow(TypeError);
    expect(
      () => new PciIntxRouting(t.dev, t.vm, GSI, { resample: RESAMPLE, guestErrors: (() => 1) as never }),
    ).toThrow(TypeError);
    expect(() => open({ pin: 0 }).route()).toThrow(/no INTx pin/);
    expect(t.dev.irq.mode).toBe('none');
    const r = t.route();
    expect(() => t.route()).toThrow(/already routed/);
    // The refused one left nothing behind: one irqfd, and a mode switch moves only that one.
    expect(t.vm.irqfds).toHaveLength(1);
    t.dev.reset('guest');
    expect(t.vm.log.filter((l) => l.startsWith('assign'))).toHaveLength(2);
    expect(r.wired).toBe(true);
  });
});
