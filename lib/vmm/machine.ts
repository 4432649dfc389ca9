/**
 * A machine for a Node VMM: guest RAM at its guest-physical ranges around a PCI hole, the PCI bus
 * from lib/pci (whose memory space is the machine's system memory), one IOMMU context for every
 * assigned device (a type1 container, or an iommufd IOAS), and the DMA listener keeping the IOMMU
 * in step with the memory space.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { checkInteger } from '../base/checks';
import { transaction, type MemoryRegion } from '../memory';
import {
  SystemAddressSpaces,
  VfioPciDevice,
  type SystemAddressSpacesOptions,
  type VfioPciDeviceOptions,
} from '../pci';
import {
  checkBackendChoice,
  isMdevUuid,
  openBackend,
  openBackendAsync,
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
import {
  assertPinnable,
  DmaListener,
  GuestRam,
  MAX_GUEST_RAM_BUFFER,
  type DmaListenerOptions,
  type GuestRamOptions,
} from '../dma';

/** Options of {@link Machine.create}. */
export interface MachineOptions {
  /** Bytes of guest RAM (a multiple of 4 KiB, or of the huge page size). */
  ramSize: number;
  /**
   * The guest-physical window kept free of RAM for BARs (default 3 GiB to 4 GiB, which holds the
   * MSI window at 0xfee00000). RAM that does not fit below it continues at 4 GiB, or after the hole
   * if the hole ends higher.
   */
  pciHole?: {
    /** Guest-physical address where the hole starts (page-aligned). */
    start: number;
    /** Size of the hole in bytes (page-aligned). */
    size: number;
  };
  /** Huge pages for guest RAM (see GuestRamOptions.hugepages). */
  hugepages?: GuestRamOptions['hugepages'];
  /**
   * Where everything in the machine reports what the guest does wrong (the bus's spaces, the
   * devices, the DMA listener). Default: a sink of the machine's own, {@link Machine.guestErrors}.
   */
  guestErrors?: GuestErrorSink;
  /** Without `guestErrors`: the own sink's log (`null`: none; counts and events remain). */
  log?: ((line: string) => void) | null;
  /** Without `guestErrors`: the own sink's minimum time between two summary lines, in milliseconds. */
  logIntervalMs?: number;
  /** Options of the PCI bus (its sink is the machine's). */
  bus?: Omit<SystemAddressSpacesOptions, 'guestErrors' | 'log' | 'logIntervalMs'>;
  /** Options of the DMA listener (its sink is the machine's). */
  dma?: Omit<DmaListenerOptions, 'guestErrors' | 'log' | 'logIntervalMs'>;
  /** Where the host's free memory is read before guest RAM is pinned (default /proc/meminfo). */
  meminfo?: string;
  /**
   * The IOMMU backend of the machine's devices (default `auto`: iommufd when the kernel offers
   * /dev/iommu and the first device has a cdev, else type1). Every device goes through the same one.
   */
  backend?: VfioBackendChoice;
}

/** One piece of guest RAM in guest-physical space. */
export interface RamRange {
  /** Guest-physical address. */
  readonly gpa: number;
  /** Length in bytes. */
  readonly size: number;
  /** Where it starts in {@link Machine.ram}. */
  readonly offset: number;
  /** The ram region showing it in system memory (`ram-below-4g`, `ram-above-4g`, or pieces `[i]`). */
  readonly region: MemoryRegion;
}

const GiB = 2 ** 30;

const PAGE = 4096;

// RAM that ends or breaks off inside a page cannot be mapped for DMA there (the listener trims it),
// so a layout that would leave such a tail is refused before anything is allocated.
function checkPage(what: string, v: number): void {
  if (v % PAGE !== 0) {
    throw new ArgRangeError(`${what} 0x${v.toString(16)} is not a multiple of the 4 KiB page`);
  }
}

/** Check the layout before anything is allocated: nothing to undo when it is wrong. */
function checkLayout(ramSize: number, hole: { start: number; size: number }): void {
  if (ramSize === 0) throw new ArgRangeError('ramSize 0: the machine needs guest RAM');
  checkPage('ramSize', ramSize);
  checkPage('pciHole.start', hole.start);
  checkPage('pciHole.size', hole.size);
  const above = ramSize - Math.min(ramSize, hole.start);
  const top = Math.max(4 * GiB, hole.start + hole.size);
  if (above > 0 && top > Number.MAX_SAFE_INTEGER - above) {
    throw new ArgRangeError(
      `${above} bytes of RAM above the PCI hole [0x${hole.start.toString(16)}, +0x${hole.size.toString(16)}) ` +
        'would end past 2^53: shrink the hole or the RAM',
    );
  }
}

/**
 * Guest RAM + PCI hole + SystemAddressSpaces + DMA listener. Devices added with {@link Machine.addDevice} share
 * the machine's IOMMU context, opened with the first one (a machine without passed-through devices
 * opens no VFIO node); the listener starts with the first one (a type1 container needs a group
 * before it has an IOMMU, an IOAS's ranges are known once a device is attached) and maps all RAM
 * at IOVA = guest-physical address, then every BAR the guest places where peer-to-peer DMA can
 * reach it.
 */
/** A device opened into the machine's IOMMU context, and whether the context was opened for it. */
interface Opened {
  dev: VfioPciDevice;
  iommu: VfioBackend;
  fresh: boolean;
}

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
  #iommu: VfioBackend | null = null;
  readonly #backend: VfioBackendChoice;
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
    this.#backend = backend;
    this.#meminfo = meminfo;
    this.bus = bus;
    this.pciHole = hole;
    this.#dmaOptions = { ...dma, guestErrors: bus.guestErrors };
    this.ramRanges = Machine.#layout(ram, hole);
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
    if (opts === null || typeof opts !== 'object') throw new ArgTypeError('Machine.create needs options');
    const ramSize = opts.ramSize;
    checkInteger(ramSize, 'ramSize');
    const hole = opts.pciHole ?? { start: 3 * GiB, size: GiB };
    checkInteger(hole.start, 'pciHole.start');
    checkInteger(hole.size, 'pciHole.size');
    checkLayout(ramSize, hole);
    const backend = checkBackendChoice(opts.backend);
    for (const [what, o] of [
      ['bus', opts.bus],
      ['dma', opts.dma],
    ] as const) {
      for (const k of ['guestErrors', 'log', 'logIntervalMs']) {
        if (o !== undefined && o !== null && k in o) {
          throw new ArgTypeError(
            `${what}.${k}: the machine's parts report to its one sink; give ${k} to Machine.create itself`,
          );
        }
      }
    }
    const ram = GuestRam.create(ramSize, { name: 'pc.ram', hugepages: opts.hugepages ?? false });
    let bus: SystemAddressSpaces | undefined;
    let built = false;
    try {
      yield 'ram';
      bus = new SystemAddressSpaces({ ...opts.bus, guestErrors: sinkOf(opts) });
      yield 'bus';
      const meminfo = opts.meminfo ?? '/proc/meminfo';
      const machine = new Machine(
        ram,
        bus,
        { start: hole.start, size: hole.size },
        opts.dma ?? {},
        meminfo,
        backend,
      );
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

  // RAM below the hole, then above max(4 GiB, hole end), in windows one ArrayBuffer can hold.
  static #layout(ram: GuestRam, hole: Machine['pciHole']): RamRange[] {
    const out: RamRange[] = [];
    const chunk = Math.floor(Math.min(MAX_GUEST_RAM_BUFFER, 2 * GiB) / GiB) * GiB || MAX_GUEST_RAM_BUFFER;
    const low = Math.min(ram.length, hole.start);
    const place = (name: string, gpa: number, offset: number, size: number): void => {
      const pieces = Math.ceil(size / chunk);
      for (let i = 0, at = 0; at < size; i++, at += chunk) {
        const n = Math.min(chunk, size - at);
        const label = pieces > 1 ? `${name}[${i}]` : name;
        out.push({ gpa: gpa + at, size: n, offset: offset + at, region: ram.region(label, offset + at, n) });
      }
    };
    if (low > 0) place('ram-below-4g', 0, 0, low);
    if (ram.length > low)
      place('ram-above-4g', Math.max(4 * GiB, hole.start + hole.size), low, ram.length - low);
    return out;
  }

  /**
   * Where the devices' DMA is mapped once a device was added: the type1 Container, or the iommufd
   * Ioas (null before: the machine needs no VFIO).
   */
  get container(): Container | Ioas | null {
    return (this.#iommu?.dma as Container | Ioas | undefined) ?? null;
  }

  /** The machine's IOMMU context (null until the first device is added). */
  get iommu(): VfioBackend | null {
    return this.#iommu;
  }

  /** The backend the devices go through, once the first was added (null before). */
  get backend(): VfioBackendKind | null {
    return this.#iommu?.kind ?? null;
  }

  /** Why that backend (null until the first device is added). */
  get backendDecision(): BackendDecision | null {
    return this.#iommu?.decision ?? null;
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
    const { dev, iommu, fresh } = this.#open(bdf, (iommu) =>
      isMdevUuid(bdf)
        ? VfioPciDevice.openByMdev(this.bus, bdf, { ...opts, iommu })
        : VfioPciDevice.openByBdf(this.bus, bdf, { ...opts, iommu }),
    );
    if (this.#dma === null) {
      try {
        assertPinnable(this.ram, this.#meminfo, mapOp(iommu));
      } catch (e) {
        this.#giveBack(dev, iommu, fresh);
        throw e;
      }
      // The listener's first commit maps all guest RAM. If that fails (RLIMIT_MEMLOCK, DMA entries),
      // it throws: a device that DMAs would hit unmapped IOVAs, so it is not handed out.
      try {
        this.#dma = new DmaListener(iommu.dma, this.bus.memory, this.#dmaOptions);
      } catch (e) {
        this.#giveBack(dev, iommu, fresh);
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
    const { dev, iommu, fresh } = await this.#openAsync(bdf, (iommu) =>
      isMdevUuid(bdf)
        ? VfioPciDevice.openByMdevAsync(this.bus, bdf, { ...opts, iommu })
        : VfioPciDevice.openByBdfAsync(this.bus, bdf, { ...opts, iommu }),
    );
    if (this.#closed) {
      this.#giveBack(dev, iommu, fresh);
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
        this.#giveBack(dev, iommu, fresh);
        throw e;
      }
    }
    this.devices.push(dev);
    return dev;
  }

  /** Open a device with `open` into the machine's IOMMU context, opened with the first device. */
  #open(bdf: string, open: (iommu: VfioBackend) => VfioPciDevice): Opened {
    const { iommu, fresh } = this.#takeIommu(bdf);
    try {
      return { dev: open(iommu), iommu, fresh };
    } catch (e) {
      this.#dropIommu(iommu, fresh);
      throw e;
    }
  }

  /** {@link Machine.#open} with an asynchronous `open`. */
  async #openAsync(bdf: string, open: (iommu: VfioBackend) => Promise<VfioPciDevice>): Promise<Opened> {
    const { iommu, fresh } = await this.#takeIommuAsync(bdf);
    try {
      return { dev: await open(iommu), iommu, fresh };
    } catch (e) {
      this.#dropIommu(iommu, fresh);
      throw e;
    }
  }

  /** The machine's IOMMU context; the first device decides its backend (`auto`) and opens it. */
  #takeIommu(bdf: string): { iommu: VfioBackend; fresh: boolean } {
    if (this.#closed) throw closedError('machine.addDevice', 'the machine', bdf);
    const fresh = this.#iommu === null;
    this.#iommu ??= openBackend(bdf, { backend: this.#backend });
    return { iommu: this.#iommu, fresh };
  }

  /**
   * {@link Machine.#takeIommu} with the backend opened in turns of the event loop (openBackendAsync).
   * Another add that opened one meanwhile wins: this one's is closed and the machine's taken.
   */
  async #takeIommuAsync(bdf: string): Promise<{ iommu: VfioBackend; fresh: boolean }> {
    if (this.#closed) throw closedError('machine.addDeviceAsync', 'the machine', bdf);
    if (this.#iommu !== null) return { iommu: this.#iommu, fresh: false };
    const iommu = await openBackendAsync(bdf, { backend: this.#backend });
    if (this.#closed) {
      iommu.close();
      throw closedError('machine.addDeviceAsync', 'the machine', bdf);
    }
    if (this.#iommu !== null) {
      iommu.close();
      return { iommu: this.#iommu, fresh: false };
    }
    this.#iommu = iommu;
    return { iommu, fresh: true };
  }

  /** Close the IOMMU context opened for a device that failed or was given back. */
  #dropIommu(iommu: VfioBackend, fresh: boolean): void {
    if (fresh && this.#iommu === iommu) {
      this.#iommu = null;
      iommu.close();
    }
  }

  /** A device that cannot be handed out: close it, and the IOMMU context it opened. */
  #giveBack(dev: VfioPciDevice, iommu: VfioBackend, fresh: boolean): void {
    dev.close();
    this.#dropIommu(iommu, fresh);
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
    const iommu = this.#iommu;
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

/** The ioctl that pins guest RAM on `iommu`'s backend, for the errors before it. */
function mapOp(iommu: VfioBackend): string {
  return iommu.kind === 'iommufd' ? 'IOMMU_IOAS_MAP' : 'VFIO_IOMMU_MAP_DMA';
}
