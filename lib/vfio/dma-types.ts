/**
 * The DMA request and record types, and the symbol that gives the IOMMU a memory's native handle.
 * Free of the addon, so the DMA listener and its fakes load without it.
 */
import type { NativeGuestMemoryHandle, NativeMappingHandle } from '../native';
import { MEMORY_HANDLE } from '../base/host-memory';
import { hex } from '../base/values';
import type { IovaRange } from './uapi';

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
  /**
   * True for device memory, mapped without struct pages (VM_IO, VM_PFNMAP), as vfio-pci maps a
   * BAR: an IOMMU that pins what it maps (iommufd) refuses it with EFAULT.
   */
  readonly deviceMemory?: boolean;
  /** @internal The native handle behind the memory. */
  [DMA_HANDLE](): NativeMappingHandle | NativeGuestMemoryHandle;
}

/** What {@link Container.mapDma} maps: `size` bytes of `memory` from `offset`, at `iova`. */
export interface DmaMapRequest {
  /** The IO virtual address the device will use, in bytes; a multiple of the IOMMU's smallest page. */
  iova: number;
  /** How many bytes to map; a non-zero multiple of the IOMMU's smallest page. */
  size: number;
  /** The host memory to map: a GuestRam, a Mapping, or anything else carrying the DMA handle. */
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
  /** The IO virtual address the mapping starts at, in bytes. */
  readonly iova: number;
  /** The mapping's length in bytes. */
  readonly size: number;
  /** The host memory behind it, as the request named it. */
  readonly memory: DmaMemory;
  /** Where in `memory` the mapping starts, in bytes (0 when the request gave none). */
  readonly offset: number;
  /** The device may read through it (IOMMU read permission). */
  readonly read: boolean;
  /** The device may write through it (IOMMU write permission). */
  readonly write: boolean;
}

/** `[start, end)` in hex, the way every DMA message prints a range. */
export function span(start: number, size: number): string {
  return `[${hex(start)}, ${hex(start + size)})`;
}

/** The two IOMMU backends: the legacy container/group uAPI (type1) and iommufd with device cdevs. */
export type VfioBackendKind = 'type1' | 'iommufd';

/** What every DMA backend reports of its IOMMU ({@link Container.iommuInfo}, `Ioas.iommuInfo`). */
export interface DmaIommuInfo {
  /** The page sizes known to work, ascending (type1: every one the IOMMU has). */
  readonly pageSizes: readonly number[];
  /** The granularity of every mapping: iova, size and offset are multiples of it. */
  readonly minPageSize: number;
  /** The IOVA ranges (inclusive ends) a mapping must lie in. */
  readonly iovaRanges: readonly IovaRange[];
}

/**
 * Where device DMA is mapped: a type1 `Container` or an iommufd `Ioas`. Both keep the same exact
 * record with the same checks before the kernel sees a request (alignment, IOVA ranges, overlaps,
 * whole mappings on unmap), so the DMA listener and lib/vmm's Machine take either.
 */
export interface DmaBackend {
  /** Which uAPI the mappings go through. */
  readonly kind: VfioBackendKind;
  /** The node the backend's fd came from (`/dev/vfio/vfio`, `/dev/iommu`). */
  readonly path: string;
  /** True once the backend was closed: its mappings are gone and every call throws ECLOSED. */
  readonly closed: boolean;
  /** Map `req.size` bytes of `req.memory` at `req.iova`, checked first; recorded once the kernel agreed. */
  mapDma(req: DmaMapRequest): void;
  /** {@link mapDma} with the ioctl on the libuv thread pool. */
  mapDmaAsync(req: DmaMapRequest): Promise<void>;
  /** Unmap exactly one or more whole recorded mappings; returns the bytes unmapped. */
  unmapDma(iova: number, size: number): number;
  /** The record: every mapping made and not unmapped, in IOVA order. */
  dmaMappings(): DmaMapping[];
  /** Bytes mapped now. */
  readonly dmaMappedBytes: number;
  /** Page sizes and IOVA ranges. */
  iommuInfo(): DmaIommuInfo;
}
