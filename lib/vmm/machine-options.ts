/**
 * Machine's options and the guest-physical layout they describe: the option types, the checks they
 * get before anything is allocated (nothing to undo when they are wrong), and where guest RAM lies
 * around the PCI hole ({@link RamRange}).
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { checkInteger } from '../base/checks';
import type { MemoryRegion } from '../memory';
import type { SystemAddressSpacesOptions } from '../pci';
import { checkBackendChoice, type VfioBackendChoice } from '../vfio';
import type { GuestErrorSink } from '../base/guest-error';
import { MAX_GUEST_RAM_BUFFER, type DmaListenerOptions, type GuestRam, type GuestRamOptions } from '../dma';

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

/** The guest-physical window kept free of RAM for BARs. */
export interface PciHole {
  /** Guest-physical address where the hole starts. */
  readonly start: number;
  /** Size of the hole in bytes. */
  readonly size: number;
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
 * Machine.create's options checked, before anything is allocated: the RAM size, the PCI hole
 * (default 3 GiB to 4 GiB), the backend, and no sink of its own for the bus or the listener.
 */
export function checkMachineOptions(opts: MachineOptions): {
  ramSize: number;
  hole: PciHole;
  backend: VfioBackendChoice;
} {
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
  return { ramSize, hole: { start: hole.start, size: hole.size }, backend };
}

/** RAM below the hole, then above max(4 GiB, hole end), in windows one ArrayBuffer can hold. */
export function ramLayout(ram: GuestRam, hole: PciHole): RamRange[] {
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
