/**
 * Host memory the package owns and hands to the kernel by handle, never by address: guest RAM
 * (`GuestRam` in lib/dma) or a `Mapping` (lib/vfio). The IOMMU (DMA mapping) and KVM (memory
 * slots) both take it; the native side resolves the handle to the live range and, for KVM, pins
 * the pages for as long as a slot uses them. The symbol keeps the native handle off the public
 * surface. Free of the addon.
 */
import type { NativeGuestMemoryHandle, NativeMappingHandle } from '../native';

/** The method of {@link HostMemory} that gives the native handle. */
export const MEMORY_HANDLE: unique symbol = Symbol('vfio-bridge.memoryHandle');

/** Memory the kernel can be given (a `Mapping` or `GuestRam`). */
export interface HostMemory {
  /** Length in bytes. */
  readonly length: number;
  /** @internal The native handle behind the memory. */
  [MEMORY_HANDLE](): NativeMappingHandle | NativeGuestMemoryHandle;
}

/** True when `m` is memory the package owns (has the handle method). */
export function isHostMemory(m: unknown): m is HostMemory {
  return (
    m !== null &&
    typeof m === 'object' &&
    typeof (m as Partial<HostMemory>)[MEMORY_HANDLE] === 'function' &&
    typeof (m as Partial<HostMemory>).length === 'number'
  );
}
