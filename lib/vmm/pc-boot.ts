/**
 * One boot of PcMachine: what firmware leaves in guest RAM (the MP table, Linux and its boot
 * parameters) and a fresh KVM VM with everything a boot needs. KVM has no "reset this VM": the
 * irqchip, PIT, local APICs and vCPUs come back in their power-on state only by being created
 * again, so each boot builds its own and {@link Boot.close} takes it all down, threads first.
 */
import {
  ExitTable,
  GSI_TABLE,
  KvmMemoryListener,
  MsiRoutes,
  VcpuSet,
  type CpuidEntry,
  type ExitRouting,
  type Kvm,
  type Vcpu,
  type Vm,
} from '../kvm';
import { allSteps, allStepsAsync, runSteps } from '../base/steps';
import type { Machine } from './machine';
import type { VfioPciDevice } from '../pci';
import { Device } from '../vfio';
import { loadLinuxSteps, type LinuxBootLayout } from './boot/load-linux';
import { pcE820 } from './boot/e820';
import { setupBootVcpuSteps } from './boot/vcpu-setup';
import { ExitTableListener } from './exit-table-listener';
import { PciIntxRouting } from './irq/pci-intx';
import { PciMsiRouting } from './irq/pci-msi';
import { msiRouteFailure, reportRouteFailure } from './irq/route-failures';
import { vfioPciSlotClassifier } from './slot-classifier';
import { pciIntxGsi, pciIntxRoutes } from './intx';
import { MPTABLE_START, mpTableSize, writeMpTable } from './mptable';
import { checkBootWindow, type BootRam } from './boot/boot-ram';
import { ArgRangeError } from '../base/error';
import { PCI_HOLE, type PcReport } from './pc-options';
import type { PciRootBus } from './pci-root-bus';

/** KVM_SET_TSS_ADDR: three pages below the BIOS area, away from the PCI window and the IOAPIC. */
const TSS_ADDR = 0xfffbd000;

/** One boot's KVM objects. */
export interface Boot {
  readonly vm: Vm;
  readonly vcpus: Vcpu[];
  readonly layout: LinuxBootLayout;
  readonly routes: MsiRoutes;
  readonly set: VcpuSet;
  /**
   * What a vCPU waits for after an exit served in JavaScript: the region changes, slots, interrupt
   * changes and routing tables queued so far; null when nothing is in flight.
   */
  readonly pending: () => Promise<void> | null;
  /** Take the boot down: its vCPU threads first, then what they ran on, its VM last. */
  readonly close: () => void;
  /** {@link close} with `turn()` awaited between its steps. */
  readonly closeAsync: (turn: () => Promise<void>) => Promise<void>;
}

/** A passed-through device and the slot it sits in. */
export interface RoutedDevice {
  readonly dev: VfioPciDevice;
  readonly slot: number;
}

/** What a boot is built from. */
export interface BootContext {
  readonly kvm: Kvm;
  readonly machine: Machine;
  readonly host: PciRootBus;
  readonly routed: readonly RoutedDevice[];
  readonly cpus: number;
  readonly kernel: Uint8Array;
  readonly initrd: Uint8Array | undefined;
  readonly cmdline: string;
  readonly supportedCpuid: CpuidEntry[];
  readonly tscDeadline: boolean;
  readonly vcpuNice: number;
  /** Where the exits the vCPU threads hand over are served. */
  readonly routing: ExitRouting;
  report(r: PcReport): void;
  /** The boot's vCPU threads were stopped (at close): their counts are final. */
  onStopped(set: VcpuSet): void;
  /** Region changes config writes handed over that have not run yet (DeferredMappings.pending). */
  mappingsPending(): Promise<void> | null;
}

/**
 * lowRam: the machine's RAM range at guest-physical 0 (all its RAM: this machine keeps RAM below the
 * PCI hole) for the boot loaders, a window of guest RAM of exactly each piece's size: a window of
 * all of it would be one external ArrayBuffer of hundreds of MiB, for which V8 runs a full garbage
 * collection.
 */
export function lowRam(machine: Machine): BootRam {
  const low = machine.ramRanges.find((r) => r.gpa === 0);
  if (low === undefined || low.size !== machine.ram.length) {
    throw new ArgRangeError(
      `guest-physical [0x0, +${machine.ram.length}) is not inside one RAM range: this machine boots with all of its RAM below the PCI hole`,
    );
  }
  const ram = machine.ram;
  return {
    length: low.size,
    bytes(gpa: number, length: number): Uint8Array {
      checkBootWindow(gpa, length, low.size);
      return new Uint8Array(ram.buffer(low.offset + gpa, length));
    },
  };
}

/** loadBootImages: the MP table and Linux (kernel, initramfs, command line) in guest RAM. */
export function loadBootImages(ctx: BootContext): LinuxBootLayout {
  return runSteps(loadBootImagesSteps(ctx));
}

/** {@link loadBootImages} in steps: the MP table, then Linux's (see loadLinuxSteps). */
export function* loadBootImagesSteps(ctx: BootContext): Generator<string, LinuxBootLayout> {
  const ram = lowRam(ctx.machine);
  const spec = { cpus: ctx.cpus, intx: pciIntxRoutes(ctx.host) };
  writeMpTable(ram.bytes(MPTABLE_START, mpTableSize(spec)), MPTABLE_START, spec);
  yield 'mptable';
  return yield* loadLinuxSteps({
    ram,
    kernel: ctx.kernel,
    cmdline: ctx.cmdline,
    ...(ctx.initrd ? { initrd: ctx.initrd } : {}),
    e820: pcE820({ ramSize: ctx.machine.ram.length, pciHoleStart: PCI_HOLE }),
  });
}

/** A promise of `a` and `b`, either of which may be null (nothing to wait for). */
function both(a: Promise<void> | null, b: Promise<void> | null): Promise<void> | null {
  if (a === null) return b;
  return b === null ? a : Promise.all([a, b]).then(() => undefined);
}

/** A routing table or irqfd KVM refused after its vector change was queued: the guest's doing. */
function reportRouteRefused(ctx: BootContext, error: unknown, where: string): void {
  // A vector's key starts with its device (`BDF msix 3`); the table is every device's.
  const device = where === GSI_TABLE ? undefined : where.split(' ')[0];
  reportRouteFailure(ctx.machine.guestErrors, device, msiRouteFailure(where), error);
}

/** startBoot: build the boot's VM for Linux loaded at `layout`; nothing is left open if it throws. */
export function startBoot(ctx: BootContext, layout: LinuxBootLayout): Boot {
  return runSteps(bootSteps(ctx, layout));
}

/**
 * bootSteps: {@link startBoot} in steps (the VM with its RAM, the slots of direct BARs, the exit
 * table, each device's interrupt routing, each vCPU). A consumer that stops early calls `return()`: what was
 * built is closed. `made` is a VM made for this boot already (Kvm.createVmAsync), owned by the
 * steps from their first: closed with the rest if they fail or are cut short.
 */
export function* bootSteps(ctx: BootContext, layout: LinuxBootLayout, made?: Vm): Generator<string, Boot> {
  const machine = ctx.machine;
  const ram = machine.ram;

  // Each step undoes one thing; one with an `async` form uses it when the boot is closed asynchronously.
  const undo: ((() => void) & { async?: () => Promise<void> })[] = [];
  const closeAll = (): void => allSteps(undo.splice(0).reverse());
  const closeAllAsync = (turn: () => Promise<void>): Promise<void> =>
    allStepsAsync(
      undo
        .splice(0)
        .reverse()
        .map((u) => u.async ?? u),
      turn,
    );
  let built = false;
  try {
    const vm = made ?? ctx.kvm.createVm();
    // The VM goes before its memory listener: its slots go with it, so the listener's removal of
    // each BAR's slot finds nothing left to ask KVM for. The devices' interrupt routing goes after
    // the VM for the same reason: its irqfds and GSI table go with it, where removing them first
    // would make KVM wait for an SRCU grace period per table and per resampler.
    let unlisten = (): void => undefined;
    const irqUndo: (() => void)[] = [];
    const afterVm = (): (() => void)[] => [() => unlisten(), ...irqUndo.splice(0).reverse()];
    undo.push(
      Object.assign(() => allSteps([() => vm.close(), ...afterVm()]), {
        // The VM's destruction in the kernel on the thread pool.
        async: () => allStepsAsync([() => vm.closeAsync(), ...afterVm()]),
      }),
    );
    vm.setTssAddr(TSS_ADDR);
    yield 'vm';
    // Each of these ioctls alone can take the kernel milliseconds (a nested KVM's most).
    vm.createIrqchip();
    yield 'irqchip';
    vm.createPit();
    // Each RAM range already knows its offset in guest RAM, which is what a slot takes.
    for (const r of machine.ramRanges) {
      vm.addSlot({ guestAddress: r.gpa, size: r.size, memory: ram, offset: r.offset, name: 'ram' });
    }
    yield 'vm';
    unlisten = machine.bus.memory.addMemoryListener(
      // Slot changes go to KVM on the thread pool: a guest moving a BAR never holds the loop.
      new KvmMemoryListener(vm, {
        classify: vfioPciSlotClassifier,
        guestErrors: ctx.machine.guestErrors,
        queue: true,
      }),
    );
    yield 'slots';
    // The ranges the vCPU threads serve themselves, kept equal to the flat views.
    const table = new ExitTable();
    undo.push(() => table.close());
    const device = (bdf: string): Device | null => {
      const d = ctx.routed.map((r) => r.dev).find((x) => x.bdf === bdf)?.device;
      return d instanceof Device ? d : null;
    };
    for (const [space, as] of [
      ['mmio', machine.bus.memory],
      ['pio', machine.bus.io],
    ] as const) {
      const l = new ExitTableListener(table, space, device);
      const off = as.addMemoryListener(l);
      undo.push(() => {
        off();
        l.clear();
      });
    }
    yield 'exit-table';
    for (const d of ctx.routed.map((r) => r.dev)) {
      const f = d.vfioFile; // the group (type1) or the device cdev (iommufd)
      if (f !== null) vm.addVfioFile(f);
    }
    // A guest enabling MSI-X, or a boot wiring INTx, waits in the kernel for host interrupts and
    // their remapping entries, and KVM for an SRCU grace period per routing table: tens of ms
    // nested. Both go to the thread pool, in order, with the vCPU that wrote held until they are in.
    for (const { dev } of ctx.routed) dev.irq.queueHostChanges();
    const routes = new MsiRoutes(vm, { queued: (error, where) => reportRouteRefused(ctx, error, where) });
    for (const { dev } of ctx.routed) {
      const msi = new PciMsiRouting(
        dev,
        {
          update: (k, m, t) => routes.update(k, m, t),
          batch: (fn) => routes.batch(fn),
          signalMsi: (lo, hi, data) => vm.signalMsi(lo, hi, data),
        },
        { guestErrors: ctx.machine.guestErrors },
      );
      irqUndo.push(() => msi.close());
      yield 'msi';
    }
    irqUndo.push(() => routes.clear());
    for (const { dev, slot } of ctx.routed) {
      const pin = dev.irq.pin;
      if (pin < 1 || pin > 4) continue;
      const intx = new PciIntxRouting(dev, vm, pciIntxGsi(slot, pin), {
        guestErrors: ctx.machine.guestErrors,
      });
      irqUndo.push(() => intx.close());
      yield 'intx';
    }
    const vcpus: Vcpu[] = [];
    for (let id = 0; id < ctx.cpus; id++) {
      const vcpu = vm.createVcpu(id, { guestErrors: ctx.machine.guestErrors });
      vcpus.push(vcpu);
      yield 'vcpu';
      // Application processors keep their power-on registers: they wait for the boot CPU's
      // INIT/SIPI in the in-kernel APIC.
      yield* setupBootVcpuSteps(vcpu, id === 0 ? layout.cpu : null, {
        supportedCpuid: ctx.supportedCpuid,
        cpus: ctx.cpus,
        tscDeadline: ctx.tscDeadline,
      });
      yield 'vcpu';
    }
    // The vCPU whose access changed the memory map runs on once it is changed (the region changes
    // its config write handed over, then KVM's slots for them), and once the interrupt changes it
    // asked for are in. Asked after every exit served in JavaScript, it allocates nothing while
    // nothing is in flight.
    const pending = (): Promise<void> | null => {
      const mappings = ctx.mappingsPending();
      let wait = mappings === null ? vm.slotChanges : mappings.then(() => vm.slotChanges ?? undefined);
      wait = both(wait, routes.pending);
      for (let k = 0; k < ctx.routed.length; k++) wait = both(wait, ctx.routed[k]!.dev.irq.hostChanges);
      return wait;
    };
    const set = new VcpuSet(vcpus, {
      routing: ctx.routing,
      table,
      pending,
      nice: ctx.vcpuNice,
      onFault: (vcpu, f) =>
        ctx.report({
          kind: 'access',
          vcpu,
          space: f.space,
          address: f.address,
          size: f.size,
          isWrite: f.isWrite,
          code: f.code,
        }),
    });
    // Threads first: nothing may run while the VM and its slots go away.
    undo.push(() => {
      set.stop();
      ctx.onStopped(set);
    });
    built = true;
    return { vm, vcpus, layout, routes, set, pending, close: closeAll, closeAsync: closeAllAsync };
  } finally {
    if (!built) closeAll();
  }
}
