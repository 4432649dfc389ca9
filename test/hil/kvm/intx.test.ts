// edu's INTx on real vfio-pci, routed by PciIntxRouting to KVM's in-kernel IOAPIC through a
// resample irqfd: a guest (test/guest/intx.S) takes it in its own handler with its own EOIs and no
// JavaScript on the path; without a vCPU, what the kernel shows of the same path (the hardware
// interrupt count, vfio-pci's mask in the device's command register, lib/pci's watcher); and a
// close that leaves no irqfd.
import * as fs from 'node:fs';
import {
  MemoryRegion,
  SystemAddressSpaces,
  PciIntxRouting,
  type PciIrqType,
  VcpuSet,
  VfioPciDevice,
} from '../../../lib';
import { guestBinary } from '../../guest/guest';
import { CHECKPOINT_PORT, GuestMachine } from '../../guest/machine';
import { bdfOf, describeDevice, openDevice, type Opened } from '../hil';
import { EDU, kernelIrqCount, settle, until } from '../pci/irq-helpers';
import { placeBar } from '../pci/lab';

jest.setTimeout(60_000);

const EDU_BAR = 0xe000_0000;
const GSI = 16;
const VECTOR = 0x51;
const GUEST_INTERRUPTS = 5;
const PCI_COMMAND_INTX_DISABLE = 0x0400;
const PCI_STATUS_INTERRUPT = 0x0008;

/** A 16-bit register of the device's own config space, as sysfs reads it (not VFIO's virtual view). */
function physConfig16(bdf: string, offset: number): number {
  const fd = fs.openSync(`/sys/bus/pci/devices/${bdf}/config`, 'r');
  try {
    const b = Buffer.alloc(2);
    fs.readSync(fd, b, 0, 2, offset);
    return b.readUInt16LE(0);
  } finally {
    fs.closeSync(fd);
  }
}

describeDevice('edu', 'INTx through a resample irqfd into KVM', () => {
  let o: Opened;
  let bus: SystemAddressSpaces;
  let dev: VfioPciDevice;
  let machine: GuestMachine;
  let routing: PciIntxRouting;
  const errors: Error[] = [];
  const js: [number, number, PciIrqType][] = [];
  let bdf: string;
  let irqName: string;

  const hw = (): number => kernelIrqCount(irqName);
  const masked = (): boolean => (physConfig16(bdf, 0x04) & PCI_COMMAND_INTX_DISABLE) !== 0;
  const asserting = (): boolean => (physConfig16(bdf, 0x06) & PCI_STATUS_INTERRUPT) !== 0;
  const raise = (): void => bus.mmioWrite(EDU_BAR + EDU.raise, 4, 1);
  const ack = (): void =>
    bus.mmioWrite(EDU_BAR + EDU.ack, 4, bus.mmioRead(EDU_BAR + EDU.status, 4) as number);

  beforeAll(() => {
    bdf = bdfOf('edu');
    irqName = `vfio-intx(${bdf})`;
    o = openDevice(bdf);
    bus = new SystemAddressSpaces();
    dev = VfioPciDevice.open(bus, o.device, { log: null });
    placeBar(dev, 0, EDU_BAR);
    dev.configWrite(0x04, 2, 0x0006);
    machine = new GuestMachine(bus);
    routing = new PciIntxRouting(dev, machine.vm, GSI);
    // The routing reports to the device's sink (its own here, with no log): KVM's refusals are `irq` reports.
    dev.guestErrors.on('guest-error', (e) => {
      if (e.source === 'irq') errors.push(e.error as Error);
    });
    // lib/pci's watcher on the same trigger eventfd: whatever KVM does not consume lands here.
    dev.irq.on('interrupt', (v, n, t) => js.push([v, n, t]));
  });
  afterAll(() => {
    routing?.close();
    machine?.close();
    bus?.close();
    o?.close();
  });

  test('wires the trigger and the resample eventfd to KVM_IRQFD on the GSI', () => {
    expect(dev.irq.mode).toBe('intx');
    expect([routing.wired, routing.errors]).toEqual([true, 0]);
    expect(machine.vm.assignments.map((a) => [a.kind, a.target])).toEqual([['irqfd', GSI]]);
    expect(routing.resampleFd).toBeGreaterThan(2);
    expect(masked()).toBe(false);
  });

  test(`a guest takes ${GUEST_INTERRUPTS} INTx in its own handler, each EOI unmasking the next`, async () => {
    const hw0 = hw();
    machine.load(guestBinary('intx'));
    [EDU_BAR, GSI, VECTOR, GUEST_INTERRUPTS].forEach((v, i) => machine.param(i, v));
    let phase = 0;
    const ports: number[] = [];
    const mmio: number[] = [];
    const checkpoint = MemoryRegion.io('checkpoint', 1, {
      read: () => 0xff,
      write: (_o, _s, v) => {
        phase = Number(v);
      },
    });
    bus.io.root.addSubregion(checkpoint, CHECKPOINT_PORT);
    try {
      const set = new VcpuSet([machine.vcpu], {
        routing: {
          memory: bus.memory,
          io: bus.io,
          onAccess: (a) => (a.space === 'io' ? ports : mmio).push(a.address),
          stop: () => phase === 0xff,
        },
      });
      try {
        expect(await set.run({ timeoutMs: 40_000 })).toEqual({ reason: 'stopped' });
      } finally {
        set.stop();
      }
    } finally {
      bus.io.root.removeSubregion(checkpoint);
    }
    expect(machine.result(0)).toBe(GUEST_INTERRUPTS);
    expect(machine.result(1) & 1).toBe(1); // the handler saw edu's raise-interrupt status bit
    // Each raise was one interrupt of the device's INTx in the lab kernel; none reached JavaScript,
    // and the guest's only exits were its checkpoints (edu's BAR is a direct slot).
    expect(hw() - hw0).toBe(GUEST_INTERRUPTS);
    expect(js).toEqual([]);
    expect(ports.every((p) => p === CHECKPOINT_PORT)).toBe(true);
    expect(mmio).toEqual([]);
    // The last EOI unmasked INTx at VFIO, and the guest acknowledged edu.
    expect([masked(), asserting()]).toEqual([false, false]);
    expect([routing.errors, errors]).toEqual([0, []]);
  });

  test('without a vCPU: KVM consumes the trigger, and VFIO keeps INTx masked until the resample eventfd', async () => {
    const hw0 = hw();
    raise();
    await until(() => hw() > hw0, 10_000, "edu's INTx in the lab kernel");
    await settle(200);
    // vfio-pci took the interrupt and masked INTx at the device; the trigger it signalled was
    // consumed by KVM's irqfd, so lib/pci's watcher on the same eventfd saw nothing.
    expect([hw() - hw0, masked(), js.length]).toEqual([1, true, 0]);
    // Serviced and raised again: the device asserts, but VFIO holds it back; no EOI came.
    ack();
    raise();
    await settle(300);
    expect([hw() - hw0, masked(), asserting(), js.length]).toEqual([1, true, true, 0]);
    // The EOI path by hand: acknowledge, then write the resample eventfd as KVM's resampler would.
    ack();
    fs.writeSync(routing.resampleFd, Buffer.from(new BigUint64Array([1n]).buffer));
    await until(() => !masked(), 10_000, 'VFIO to unmask INTx on the resample eventfd');
    // The next raise is a second interrupt, consumed by KVM the same way.
    raise();
    await until(() => hw() > hw0 + 1, 10_000, "edu's second INTx in the lab kernel");
    await settle(200);
    expect([hw() - hw0, masked(), js.length, routing.errors]).toEqual([2, true, 0, 0]);
    ack();
  });

  test('close releases the irqfd; INTx goes back to lib/pci, whose watcher then sees the device', async () => {
    routing.close();
    routing.close();
    expect(machine.vm.assignments).toEqual([]);
    expect(routing.wired).toBe(false);
    // A JS listener still wants INTx: lib/pci enabled it anew, without the resample eventfd.
    expect(dev.irq.mode).toBe('intx');
    raise();
    await until(() => js.length > 0, 10_000, 'the INTx in JavaScript');
    expect(js).toEqual([[0, 1, 'intx']]);
    ack();
    dev.irq.eoi();
  });
});
