import { ArgRangeError } from '../base/error';
import type { AccessSize, FixedWidthMemory } from '../memory';
import type { RegionInfo } from '../vfio';

/**
 * The part of a VFIO device the PCI layer uses. The native `Device` from lib/vfio satisfies it, and
 * test fakes implement it without a kernel.
 */
export interface VfioDeviceLike {
  /** The device's PCI address (`0000:00:03.0`), used in region names, reports and errors. */
  readonly bdf: string;
  /** See {@link Device.regionInfo}. */
  regionInfo(index: number): RegionInfo;
  /** One pread of exactly `size` bytes. */
  read(region: number, offset: number, size: AccessSize): number | bigint;
  /** One pwrite of exactly `size` bytes. */
  write(region: number, offset: number, size: AccessSize, v: number | bigint): void;
  /** An mmap of `length` bytes at `offset` inside the region. */
  map(
    region: number,
    offset: number,
    length: number,
  ): FixedWidthMemory & {
    /** Unmap it. */
    close(): void;
  };
}

/**
 * How an access to a flat range is served:
 * - `direct`: mmap-backed, page-aligned and a whole number of pages; a VMM may hand it to
 *   KVM_SET_USER_MEMORY_REGION;
 * - `trapped-mmap`: mmap-backed but sub-page or misaligned; the VMM traps and the access is one
 *   native fixed-width load or store;
 * - `trapped-fd`: one pread/pwrite on the device fd;
 * - `emulated`: served by a quirk or MSI-X overlay, or by the base BAR where nothing else covers it.
 */
export type MapInfo = 'direct' | 'trapped-mmap' | 'trapped-fd' | 'emulated';

/** The role a region plays in a vfio-pci BAR stack. */
export type PciRegionRole = 'base' | 'bar' | 'mmap' | 'msix-table' | 'msix-pba' | 'quirk' | 'rom';

/** What lib/pci stores in `MemoryRegion.tag` for every region it creates. */
export interface PciRegionTag {
  /** Marks the tag as lib/pci's (see {@link isPciRegionTag}). */
  readonly owner: 'vfio-pci';
  /** PCI address of the device the region belongs to. */
  readonly bdf: string;
  /** BAR number, or 6 for the expansion ROM. */
  readonly bar: number;
  /** Which part of the BAR stack the region is. */
  readonly role: PciRegionRole;
  /** Narrowest and widest access the region accepts, used by the dump to pick its width. */
  readonly minAccess: AccessSize;
  /** Widest access the region accepts, in bytes. */
  readonly maxAccess: AccessSize;
  /** Offset of the region inside its BAR (mmaps and overlays), so flat ranges map back to BAR offsets. */
  readonly barOffset: number;
}

/** True when `tag` was put on a region by lib/pci. */
export function isPciRegionTag(tag: unknown): tag is PciRegionTag {
  return typeof tag === 'object' && tag !== null && (tag as { owner?: unknown }).owner === 'vfio-pci';
}

const SIZES: readonly number[] = [1, 2, 4, 8];

/** Throws a RangeError unless `size` is 1, 2, 4 or 8. */
export function checkAccessSize(size: unknown, what: string): asserts size is AccessSize {
  if (typeof size !== 'number' || !SIZES.includes(size)) {
    throw new ArgRangeError(`${what}: access size ${String(size)} is not 1, 2, 4 or 8`);
  }
}

export { checkInteger } from '../base/checks';

export { hex } from '../base/values';
