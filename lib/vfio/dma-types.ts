/**
 * The DMA request and record types, and the symbol that gives the IOMMU a memory's native handle.
 * Free of the addon, so the DMA listener and its fakes load without it.
 */
import type { NativeGuestMemoryHandle, NativeMappingHandle } from '../native';
import { MEMORY_HANDLE } from '../base/host-memory';

/**
 * Host memory the package owns and can hand to the IOMMU: guest RAM (`GuestRam` in lib/dma) or a
 * `Mapping`. The same symbol as lib/base's MEMORY_HANDLE, which KVM memory slots take too.
 */
export const DMA_HANDLE: typeof MEMORY_HANDLE = MEMORY_HANDLE;

/** Memory that {@link DmaMapRequest.memory} accepts. */
export interface DmaMemory {
  /** Length in bytes. */
  readonly length: number;
  /** A name for error messages (a region name, a device node). */
  readonly dmaName?: string;
  /** @internal The native handle behind the memory. */
  [DMA_HANDLE](): NativeMappingHandle | NativeGuestMemoryHandle;
}

/** What {@link Container.mapDma} maps: `size` bytes of `memory` from `offset`, at `iova`. */
export interface DmaMapRequest {
  iova: number;
  size: number;
  memory: DmaMemory;
  /** Where in `memory` the mapping starts (default 0). */
  offset?: number;
  /** The device may read (default true). */
  read?: boolean;
  /** The device may write (default true). */
  write?: boolean;
}

/** One recorded mapping. */
export interface DmaMapping {
  readonly iova: number;
  readonly size: number;
  readonly memory: DmaMemory;
  readonly offset: number;
  readonly read: boolean;
  readonly write: boolean;
}

export function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}

/** `[start, end)` in hex, the way every DMA message prints a range. */
export function span(start: number, size: number): string {
  return `[${hex(start)}, ${hex(start + size)})`;
}
