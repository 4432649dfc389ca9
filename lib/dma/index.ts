/** lib/dma: guest RAM, the DMA listener and the machine helper that puts them together. */
export { registerDmaBuffer, dmaBufferOwner } from './dma-buffers';
export { GuestRam, MAX_GUEST_RAM_BUFFER, type GuestRamOptions, type SharedGuestRam } from './guest-ram';
export {
  DmaListener,
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
export { Machine, type MachineOptions, type RamRange } from './machine';
