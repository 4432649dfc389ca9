/**
 * lib/dma: guest RAM and the DMA listener that keeps the IOMMU equal to it, on either backend (a type1
 * Container or an iommufd Ioas; lib/vmm's Machine puts them on a bus).
 */
export {
  registerDmaBuffer,
  dmaBufferOwner,
  registerDmaRegion,
  dmaRegionOwner,
  type DmaBufferOwner,
} from './dma-buffers';
export { assertPinnable, type PinnableRam } from './pinnable';
export { GuestRam, MAX_GUEST_RAM_BUFFER, type GuestRamOptions, type SharedGuestRam } from './guest-ram';
export {
  DmaListener,
  type DmaListenerEvents,
  DmaCommitError,
  UNMAP_ATTEMPTS,
  type DmaContainer,
  type DmaSkip,
  type DmaSkipReason,
  type DmaListenerMapping,
  type DmaErrorEvent,
  type DmaListenerOptions,
  type DmaListenerStats,
} from './listener';
export type { DmaBackend } from '../vfio/dma-types';
