// A route KVM refuses, on real KVM with a real device: edu's MSI, enabled as a guest driver enables
// it, on a VM whose GSI routing table is already full. KVM_SET_GSI_ROUTING takes at most
// KVM_MAX_IRQ_ROUTES (4096 on x86) entries; with the in-kernel irqchip's 40 routes and 4056 MSI
// routes of other vectors (plain routes, no irqfd) the table has no room left, so the kernel refuses
// the table that adds edu's vector (EINVAL). PciMsiRouting reports that on the device's sink as
// irq/irq-route-failed and goes on: the guest's config write returns as on a PC. Room made later lets
// the next change of the table carry the vector's route.
import {
  GSI_TABLE,
  GuestErrorSink,
  Kvm,
  MsiRoutes,
  PciMsiRouting,
  SystemAddressSpaces,
  VfioPciDevice,
  type GuestError,
  type Vm,
} from '../../../lib';
import { describeDevice, openDevice, type Opened } from '../hil';
import { enableMsi } from '../pci/irq-helpers';

/** KVM_MAX_IRQ_ROUTES on x86: the most entries one KVM_SET_GSI_ROUTING takes. */
const MAX_ROUTES = 4096;
/** The in-kernel irqchip's routes every table carries (defaultIrqchipRoutes: 16 PIC, 24 IOAPIC). */
const IRQCHIP_ROUTES = 40;

/** What each test opens, closed after it: edu on a bus, and a VM with the in-kernel irqchip. */
function useRoutedEdu(): {
  open(bdf: string, sink: GuestErrorSink): { dev: VfioPciDevice; vm: Vm };
  route(routing: PciMsiRouting): void;
} {
  let o: Opened | undefined;
  let bus: SystemAddressSpaces | undefined;
  let kvm: Kvm | undefined;
  let vm: Vm | undefined;
  let routing: PciMsiRouting | undefined;
  afterAll(() => {
    routing?.close();
    vm?.close();
    kvm?.close();
    bus?.close();
    o?.close();
  });
  return {
    open(bdf, sink) {
      o = openDevice(bdf);
      bus = new SystemAddressSpaces({ guestErrors: sink });
      const dev = VfioPciDevice.open(bus, o.device);
      kvm = Kvm.open();
      vm = kvm.createVm();
      vm.createIrqchip();
      return { dev, vm };
    },
    route(r) {
      routing = r;
    },
  };
}

describeDevice('edu', 'an MSI route KVM refuses: the GSI routing table is full', (bdf) => {
  const fixture = useRoutedEdu();

  test("the guest's MSI enable returns, the refusal is one guest error, and room made later routes it", () => {
    const sink = new GuestErrorSink({ log: null });
    const reports: GuestError[] = [];
    sink.on('guest-error', (e) => reports.push(e));
    const { dev, vm } = fixture.open(bdf(), sink);
    const routes = new MsiRoutes(vm);
    const others = MAX_ROUTES - IRQCHIP_ROUTES;
    routes.batch(() => {
      for (let i = 0; i < others; i++)
        routes.update(`other ${i}`, { addressLo: 0xfee00000, addressHi: 0, data: 0x4030 + (i % 16) });
    });
    // KVM took the table full to the last entry.
    expect(routes.size).toBe(others);
    const routing = new PciMsiRouting(dev, {
      update: (key, msg, trigger) => routes.update(key, msg, trigger),
      batch: (fn) => routes.batch(fn),
      signalMsi: (lo, hi, data) => vm.signalMsi(lo, hi, data),
    });
    fixture.route(routing);
    expect([routing.errors, reports]).toEqual([0, []]);

    enableMsi(dev);
    expect(dev.irq.mode).toBe('msi');
    expect(reports).toEqual([
      expect.objectContaining({
        source: 'irq',
        kind: 'irq-route-failed',
        device: bdf(),
        where: `${bdf()} msi`,
        action: 'ignored',
        message: expect.stringMatching(/^KVM refused the route of \S+ msi: KVM_SET_GSI_ROUTING/),
        hint: expect.stringMatching(/the GSI table is full/),
      }),
    ]);
    const err = reports[0].error as Error & { code?: string };
    expect([err.code, err.message]).toEqual(['EINVAL', expect.stringMatching(/4097 routes/)]);
    expect([routing.errors, sink.count('irq', 'irq-route-failed'), sink.total]).toEqual([1, 1, 1]);

    // Room for one more: the next table, which carries edu's route, is taken, and nothing is reported.
    const gsi = routes.gsiOf(routing.key('msi', 0));
    expect(gsi).toBeDefined();
    routes.update('other 0', null);
    expect(routes.size).toBe(others);
    expect(vm.assignments.filter((a) => a.kind === 'irqfd').map((a) => a.target)).toEqual([gsi]);
    expect([routing.errors, sink.total]).toEqual([1, 1]);
  });
});

describeDevice('edu', 'the same refusal with the routing tables on the thread pool', (bdf) => {
  const fixture = useRoutedEdu();

  test('KVM refuses the table after the write returned: reported to `queued`, and room made later routes it', async () => {
    const sink = new GuestErrorSink({ log: null });
    const { dev, vm } = fixture.open(bdf(), sink);
    dev.irq.queueHostChanges();
    const refused: [string, string, string][] = [];
    const routes = new MsiRoutes(vm, {
      queued: (e, where) => refused.push([where, (e as { code: string }).code, (e as Error).message]),
    });
    const others = MAX_ROUTES - IRQCHIP_ROUTES;
    routes.batch(() => {
      for (let i = 0; i < others; i++)
        routes.update(`other ${i}`, { addressLo: 0xfee00000, addressHi: 0, data: 0x4030 + (i % 16) });
    });
    await routes.pending;
    expect(refused).toEqual([]);
    const routing = new PciMsiRouting(dev, {
      update: (key, msg, trigger) => routes.update(key, msg, trigger),
      batch: (fn) => routes.batch(fn),
      signalMsi: (lo, hi, data) => vm.signalMsi(lo, hi, data),
    });
    fixture.route(routing);
    enableMsi(dev);
    expect(dev.irq.mode).toBe('msi');
    // Nothing was refused while the write ran: the host's enable and the table are in flight.
    expect([refused, routing.errors]).toEqual([[], 0]);
    expect(dev.irq.hostChanges).not.toBeNull();
    expect(routes.pending).not.toBeNull();
    await Promise.all([dev.irq.hostChanges, routes.pending]);
    expect(refused).toEqual([[GSI_TABLE, 'EINVAL', expect.stringMatching(/4097 routes/)]]);
    // The vector's irqfd was still assigned after its table (KVM takes an irqfd on a GSI without a
    // route); room for one more puts the route in with the next table.
    const gsi = routes.gsiOf(routing.key('msi', 0));
    expect(vm.assignments.filter((a) => a.kind === 'irqfd').map((a) => a.target)).toEqual([gsi]);
    routes.update('other 0', null);
    await routes.pending;
    expect(refused).toHaveLength(1);
    expect(sink.total).toBe(0);
  });
});
