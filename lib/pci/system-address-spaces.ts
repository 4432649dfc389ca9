import { ArgRangeError, ArgTypeError } from '../base/error';
import { closedError } from '../base/error';
import { sinkOf, type GuestErrorSink } from '../base/guest-error';
import {
  type AccessLength,
  AddressSpace,
  type AddressSpaceOptions,
  type FlatRange,
  MemoryRegion,
  renderMtree,
  mtreeJson,
} from '../memory';
import { DEFAULT_PAGE_SIZE } from './constants';
import { classifyRange, mapinfoColumn } from './mapinfo';
import { checkInteger, isPciRegionTag, type MapInfo } from './types';

/** Which address space an exit targets. */
export type PciSpace = 'memory' | 'io';

/** One flat range of a vfio-pci device, with how accesses to it are served. */
export interface MapInfoRange {
  /** The bus address space the range is in. */
  readonly space: PciSpace;
  /** Bus address of the range's start in `space`. */
  readonly addr: number;
  /** Length in bytes. */
  readonly size: number;
  /** Name of the region serving the range (QEMU's naming). */
  readonly name: string;
  /** How the memory model serves the flat range the piece came from. */
  readonly kind: FlatRange['kind'];
  /** How accesses to this piece reach the device. */
  readonly mapinfo: MapInfo;
  /** PCI address of the device the range belongs to. */
  readonly bdf: string;
  /** BAR number, 6 for the ROM. */
  readonly bar: number;
  /** Offset of the range's start inside its BAR. */
  readonly barOffset: number;
}

/** Options of {@link SystemAddressSpaces}. */
export interface SystemAddressSpacesOptions {
  /** Size of the PCI memory space (default 2^48). */
  memorySize?: number;
  /** Size of the PCI I/O space (default 64 KiB). */
  ioSize?: number;
  /** Host page size (default 4096). */
  pageSize?: number;
  /**
   * Where both address spaces, and the devices opened on the bus without a sink of their own,
   * report what the guest does wrong. Default: a sink of the bus's own.
   */
  guestErrors?: GuestErrorSink;
  /** Without `guestErrors`: the own sink's log (see GuestErrorSinkOptions.log). */
  log?: AddressSpaceOptions['log'];
  /** Without `guestErrors`: the own sink's minimum time between summary lines. */
  logIntervalMs?: number;
}

/**
 * SystemAddressSpaces: the VMM's system memory and I/O port address spaces, where guest RAM lies
 * (`Machine` adds it to `memory`) and vfio-pci devices place their BARs, and the entry point for
 * the VMM's MMIO and PIO exits. The PCI bus that config cycles reach is `PciRootBus` (lib/vmm).
 */
export class SystemAddressSpaces {
  /** The PCI memory space. */
  readonly memory: AddressSpace;
  /** The PCI I/O port space. */
  readonly io: AddressSpace;
  /** Host page size, the granularity of `direct` ranges. */
  readonly pageSize: number;
  /** Where the bus's spaces and devices report what the guest does wrong. */
  readonly guestErrors: GuestErrorSink;
  #closers = new Set<() => void>();
  #closed = false;

  constructor(opts: SystemAddressSpacesOptions = {}) {
    const memorySize = opts.memorySize ?? 2 ** 48;
    const ioSize = opts.ioSize ?? 0x10000;
    const pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE;
    checkInteger(memorySize, 'PCI memory size');
    checkInteger(ioSize, 'PCI I/O size');
    checkInteger(pageSize, 'page size');
    if (pageSize === 0 || (pageSize & (pageSize - 1)) !== 0) {
      throw new ArgRangeError(`page size ${pageSize} is not a power of two`);
    }
    this.pageSize = pageSize;
    this.guestErrors = sinkOf(opts);
    const spaceOpts = { guestErrors: this.guestErrors };
    this.memory = new AddressSpace('pci-memory', MemoryRegion.container('pci', memorySize), spaceOpts);
    this.io = new AddressSpace('pci-io', MemoryRegion.container('io', ioSize), spaceOpts);
  }

  /** The address space for `space`. */
  space(space: PciSpace): AddressSpace {
    if (space === 'memory') return this.memory;
    if (space === 'io') return this.io;
    throw new ArgTypeError(`PCI space must be 'memory' or 'io', got ${String(space)}`);
  }

  /**
   * dispatch: serve one MMIO ('memory') or PIO ('io') exit and return the value read (undefined for
   * a write). An access of 1, 2, 4 or 8 bytes inside one range reaches the region at exactly `size`
   * bytes: trapped mmap sections are one native load or store of that width, and fd-backed ones one
   * pread or pwrite. Other lengths (3, 5, 6, 7, as KVM reports page-straddling exits) and accesses
   * crossing ranges are split as {@link AddressSpace.read} describes. The access must end at or
   * below 2^53 (RangeError), as every address-space access must.
   */
  dispatch(
    space: PciSpace,
    addr: number,
    size: AccessLength,
    isWrite: boolean,
    value?: number | bigint,
  ): number | bigint | undefined {
    const as = space === 'memory' ? this.memory : space === 'io' ? this.io : this.space(space);
    this.#checkOpen();
    // The address space validates the address, the size and the value itself, on its fast path.
    if (isWrite) {
      as.write(addr, size, value as number | bigint);
      return undefined;
    }
    return as.read(addr, size);
  }

  /** Guest MMIO read. */
  mmioRead(addr: number, size: AccessLength): number | bigint {
    this.#checkOpen();
    return this.memory.read(addr, size);
  }

  /** Guest MMIO write. */
  mmioWrite(addr: number, size: AccessLength, value: number | bigint): void {
    this.dispatch('memory', addr, size, true, value);
  }

  /** Guest port read. */
  pioRead(addr: number, size: AccessLength): number | bigint {
    this.#checkOpen();
    return this.io.read(addr, size);
  }

  /** Guest port write. */
  pioWrite(addr: number, size: AccessLength, value: number | bigint): void {
    this.dispatch('io', addr, size, true, value);
  }

  /** Every vfio-pci flat range in both spaces, split into pieces that are each served one way. */
  mapinfo(): MapInfoRange[] {
    const out: MapInfoRange[] = [];
    for (const space of ['memory', 'io'] as const) {
      for (const r of this.space(space).flatView.ranges) {
        const tag = r.region.tag;
        const pieces = classifyRange(r, this.pageSize);
        if (!isPciRegionTag(tag) || pieces === undefined) continue;
        for (const p of pieces) {
          out.push({
            space,
            addr: p.addr,
            size: p.size,
            name: r.region.name,
            kind: r.kind,
            mapinfo: p.mapinfo,
            bdf: tag.bdf,
            bar: tag.bar,
            barOffset: tag.barOffset + p.offsetInRegion,
          });
        }
      }
    }
    return out;
  }

  /** `info mtree` of one space, with a mapinfo column on flat ranges of vfio-pci devices. */
  mtree(space: PciSpace = 'memory', opts: { flat?: boolean } = {}): string {
    return renderMtree(this.space(space), {
      flat: opts.flat ?? false,
      annotate: (r) => mapinfoColumn(classifyRange(r, this.pageSize)),
    });
  }

  /** The memory layer's JSON view of both spaces plus the classified vfio-pci ranges. */
  mtreeJson(): {
    /** {@link mtreeJson} of the PCI memory space. */
    memory: unknown;
    /** {@link mtreeJson} of the PCI I/O space. */
    io: unknown;
    /** {@link SystemAddressSpaces.mapinfo} at the same moment. */
    mapinfo: MapInfoRange[];
  } {
    return { memory: mtreeJson(this.memory), io: mtreeJson(this.io), mapinfo: this.mapinfo() };
  }

  /** Registers a cleanup run by {@link SystemAddressSpaces.close} (used by devices on the bus). */
  onClose(fn: () => void): () => void {
    this.#closers.add(fn);
    return () => this.#closers.delete(fn);
  }

  /** Closes every device on the bus, then both address spaces. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const fn of [...this.#closers]) fn();
    this.#closers.clear();
    this.memory.close();
    this.io.close();
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  #checkOpen(): void {
    if (this.#closed) throw closedError('SystemAddressSpaces', 'the SystemAddressSpaces');
  }
}

/**
 * @deprecated Renamed {@link SystemAddressSpaces}: the class holds the system's memory and I/O
 * address spaces (guest RAM, BARs, ports), not a PCI bus; the bus is `PciRootBus` in lib/vmm.
 */
export const PciBus = SystemAddressSpaces;
/** @deprecated Renamed {@link SystemAddressSpaces}. */
export type PciBus = SystemAddressSpaces;
/** @deprecated Renamed {@link SystemAddressSpacesOptions}. */
export type PciBusOptions = SystemAddressSpacesOptions;
