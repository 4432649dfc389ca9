/**
 * A machine for a Node VMM: guest RAM at its guest-physical ranges around a PCI hole, the PCI bus
 * from lib/pci (whose memory space is the machine's system memory), one IOMMU context for every
 * assigned device (a type1 container, or an iommufd IOAS), and the DMA listener keeping the IOMMU
 * in step with the memory space. This file is Machine's surface and lifecycle; beside it are its
 * options, their checks and the RAM layout they give (machine-options.ts), and the IOMMU context
 * the devices share, opened with the first (machine-iommu.ts).
 */
import { ArgRangeError } from '../base/error';
import { checkInteger } from '../base/checks';
import { transaction } from '../memory';
import { SystemAddressSpaces, VfioPciDevice, type VfioPciDeviceOptions } from '../pci';
import {
  isMdevUuid,
  type BackendDecision,
  type Container,
  type Ioas,
  type VfioBackend,
  type VfioBackendChoice,
  type VfioBackendKind,
} from '../vfio';
import { closedError } from '../base/error';
import { EventEmitter } from 'node:events';
import { forwardGuestErrors, sinkOf, type GuestError, type GuestErrorSink } from '../base/guest-error';
import { allSteps, allStepsAsync, runSteps, runStepsAsync } from '../base/steps';
import { assertPinnable, DmaListener, GuestRam, type DmaListenerOptions } from '../dma';
import { MachineIommu, mapOp } from './machine-iommu';
import { checkMachineOptions, ramLayout, type MachineOptions, type RamRange } from './machine-options';

export type { MachineOptions, RamRange } from './machine-options';

/** The events of a {@link Machine}. */
export type MachineEvents = {
  /** What the guest did wrong, from any layer (the same as `machine.guestErrors`' event). */
  'guest-error': [GuestError];
};

/**
 * Guest RAM around a PCI hole, the PCI bus, one VFIO container and the DMA listener: what a Node
 * VMM's machine holds besides KVM. Made by {@link Machine.create}; devices come with
 * {@link Machine.addDevice}. Everything in it reports what the guest does wrong to
 * {@link Machine.guestErrors}, also heard as the machine's own `guest-error` event.
 *
 * Devices added with {@link Machine.addDevice} share the machine's IOMMU context, opened with the
 * first one (a machine without passed-through devices opens no VFIO node); the listener starts
 * with the first one (a type1 container needs a group before it has an IOMMU, an IOAS's ranges are
 * known once a device is attached) and maps all RAM at IOVA = guest-physical address, then every
 * BAR the guest places where peer-to-peer DMA can reach it.
 */
export class Machine extends EventEmitter<MachineEvents> implements Disposable {
  /** All guest RAM, one block (`pc.ram`), shown in system memory by {@link Machine.ramRanges}. */
  readonly ram: GuestRam;
  /** The PCI bus: its memory space is the machine's guest-physical memory, its I/O space the ports. */
  readonly bus: SystemAddressSpaces;
  /**
   * Where every part of the machine reports what the guest does wrong, with the counts by kind;
   * `machine.on('guest-error', ...)` hears the same reports.
   */
  readonly guestErrors: GuestErrorSink;
  readonly #iommu: MachineIommu;
  /** The guest-physical window kept free of RAM for BARs. */
  readonly pciHole: {
    /** Guest-physical address where the hole starts. */
    readonly start: number;
    /** Size of the hole in bytes. */
    readonly size: number;
  };
  /** Where guest RAM lies: below the hole, then above max(4 GiB, hole end), in ascending order. */
  readonly ramRanges: readonly RamRange[];
  /** The devices added with {@link Machine.addDevice}, in order; emptied by close. */
  readonly devices: VfioPciDevice[] = [];
  #dma: DmaListener | null = null;
  readonly #dmaOptions: DmaListenerOptions;
  readonly #meminfo: string;
  #closed = false;

  private constructor(
    ram: GuestRam,
    bus: SystemAddressSpaces,
    hole: Machine['pciHole'],
    dma: DmaListenerOptions,
    meminfo: string,
    backend: VfioBackendChoice,
  ) {
    super();
    this.guestErrors = bus.guestErrors;
    forwardGuestErrors(this, this.guestErrors);
    this.ram = ram;
    this.#iommu = new MachineIommu(backend, () => this.#closed);
    this.#meminfo = meminfo;
    this.bus = bus;
    this.pciHole = hole;
    this.#dmaOptions = { ...dma, guestErrors: bus.guestErrors };
    this.ramRanges = ramLayout(ram, hole);
    transaction(() => {
      for (const r of this.ramRanges) bus.memory.root.addSubregion(r.region, r.gpa);
    });
  }

  /** Allocate guest RAM and build the bus. */
  static create(opts: MachineOptions): Machine {
    return runSteps(Machine.#build(opts));
  }

  /**
   * {@link create} with a turn of the event loop between its steps (the RAM, the bus, the RAM's
   * regions in the system address space), each of which held the loop ~50-130 ms in the lab.
   */
  static createAsync(opts: MachineOptions): Promise<Machine> {
    return runStepsAsync(Machine.#build(opts));
  }

  static *#build(opts: MachineOptions): Generator<'ram' | 'bus', Machine> {
    const { ramSize, hole, backend } = checkMachineOptions(opts);
    const ram = GuestRam.create(ramSize, { name: 'pc.ram', hugepages: opts.hugepages ?? false });
    let bus: SystemAddressSpaces | undefined;
    let built = false;
    try {
      yield 'ram';
      bus = new SystemAddressSpaces({ ...opts.bus, guestErrors: sinkOf(opts) });
      yield 'bus';
      const meminfo = opts.meminfo ?? '/proc/meminfo';
      const machine = new Machine(ram, bus, hole, opts.dma ?? {}, meminfo, backend);
      built = true;
      return machine;
    } finally {
      // Also when the steps are ended early (runStepsAsync's return()).
      if (!built) {
        bus?.close();
        ram.close();
      }
    }
  }

  /**
   * Where the devices' DMA is mapped once a device was added: the type1 Container, or the iommufd
   * Ioas (null before: the machine needs no VFIO).
   */
  get container(): Container | Ioas | null {
    return (this.#iommu.current?.dma as Container | Ioas | undefined) ?? null;
  }

  /** The machine's IOMMU context (null until the first device is added). */
  get iommu(): VfioBackend | null {
    return this.#iommu.current;
  }

  /** The backend the devices go through, once the first was added (null before). */
  get backend(): VfioBackendKind | null {
    return this.#iommu.current?.kind ?? null;
  }

  /** Why that backend (null until the first device is added). */
  get backendDecision(): BackendDecision | null {
    return this.#iommu.current?.decision ?? null;
  }

  /** The DMA listener (null until the first device is added). */
  get dma(): DmaListener | null {
    return this.#dma;
  }

  /**
   * Open the vfio-pci device at `bdf` (or the vfio-pci mediated device whose UUID `bdf` is) on the
   * machine's bus and container, and start the DMA listener if this is the first device.
   */
  addDevice(bdf: string, opts: VfioPciDeviceOptions = {}): VfioPciDevice {
    const opened = this.#iommu.open(bdf, (iommu) =>
      isMdevUuid(bdf)
        ? VfioPciDevice.openByMdev(this.bus, bdf, { ...opts, iommu })
        : VfioPciDevice.openByBdf(this.bus, bdf, { ...opts, iommu }),
    );
    const { dev, iommu } = opened;
    if (this.#dma === null) {
      try {
        assertPinnable(this.ram, this.#meminfo, mapOp(iommu));
      } catch (e) {
        this.#iommu.giveBack(opened);
        throw e;
      }
      // The listener's first commit maps all guest RAM. If that fails (RLIMIT_MEMLOCK, DMA entries),
      // it throws: a device that DMAs would hit unmapped IOVAs, so it is not handed out.
      try {
        this.#dma = new DmaListener(iommu.dma, this.bus.memory, this.#dmaOptions);
      } catch (e) {
        this.#iommu.giveBack(opened);
        throw e;
      }
    }
    this.devices.push(dev);
    return dev;
  }

  /**
   * {@link addDevice}, with the first device's mapping of all guest RAM on the libuv thread pool
   * (DmaListener.create): pinning RAM for the IOMMU does not hold the event loop.
   */
  async addDeviceAsync(bdf: string, opts: VfioPciDeviceOptions = {}): Promise<VfioPciDevice> {
    const opened = await this.#iommu.openAsync(bdf, (iommu) =>
      isMdevUuid(bdf)
        ? VfioPciDevice.openByMdevAsync(this.bus, bdf, { ...opts, iommu })
        : VfioPciDevice.openByBdfAsync(this.bus, bdf, { ...opts, iommu }),
    );
    const { dev, iommu } = opened;
    if (this.#closed) {
      this.#iommu.giveBack(opened);
      throw closedError('machine.addDeviceAsync', 'the machine', bdf);
    }
    if (this.#dma === null) {
      try {
        assertPinnable(this.ram, this.#meminfo, mapOp(iommu));
        const dma = await DmaListener.create(iommu.dma, this.bus.memory, this.#dmaOptions);
        if (this.#closed) {
          dma.close();
          throw closedError('machine.addDeviceAsync', 'the machine', bdf);
        }
        this.#dma = dma;
      } catch (e) {
        this.#iommu.giveBack(opened);
        throw e;
      }
    }
    this.devices.push(dev);
    return dev;
  }

  /**
   * What KVM_SET_USER_MEMORY_REGION needs for each RAM range: guest-physical address, size and the
   * host address of its first byte (page-aligned, as KVM requires).
   */
  memorySlots(): {
    /** Guest-physical address of the range. */
    gpa: number;
    /** Length in bytes. */
    size: number;
    /** Host virtual address of its first byte. */
    hostAddress: bigint;
  }[] {
    const base = this.ram.hostAddress;
    return this.ramRanges.map((r) => ({ gpa: r.gpa, size: r.size, hostAddress: base + BigInt(r.offset) }));
  }

  /**
   * A DataView of guest RAM at guest-physical `gpa` (the range must lie in one RAM range). It is cut
   * from {@link GuestRam.view}'s window of up to 4 GiB of RAM, made by the first call and kept: for a
   * few writes on a path that must not pause for a GC, take `ram.buffer(offset, length)` instead.
   */
  gpaView(gpa: number, length: number): DataView {
    checkInteger(gpa, 'gpa');
    checkInteger(length, 'length');
    const r = this.ramRanges.find((x) => gpa >= x.gpa && gpa + length <= x.gpa + x.size);
    if (r === undefined) {
      throw new ArgRangeError(
        `guest-physical [0x${gpa.toString(16)}, +${length}) is not inside one RAM range`,
      );
    }
    return this.ram.view(r.offset + (gpa - r.gpa), length);
  }

  /** Stop DMA, close the devices, the IOMMU context, the bus and guest RAM. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Every step runs even when an earlier one throws, so nothing is left open; the first error is
    // thrown at the end.
    allSteps(this.#closeSteps((d) => d.close()));
  }

  /**
   * {@link close} without holding the event loop: each device's fd is closed on the libuv thread
   * pool (the kernel resets the device then), and the loop gets a turn between the steps.
   */
  async closeAsync(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await allStepsAsync(this.#closeSteps((d) => d.closeAsync()));
  }

  /** What close and closeAsync do, in order: DMA, each device (by `closeDevice`), the IOMMU context, the bus, RAM. */
  #closeSteps<R>(closeDevice: (d: VfioPciDevice) => R): (() => R | void)[] {
    const dma = this.#dma;
    const iommu = this.#iommu.current;
    return [
      () => dma?.close(),
      ...this.devices.splice(0).map((d) => () => closeDevice(d)),
      () => iommu?.close(),
      () => this.bus.close(),
      () => this.ram.close(),
      () => this.guestErrors.flush(),
    ];
  }

  /** Same as {@link Machine.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@link Machine.closeAsync}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.closeAsync();
  }
}
