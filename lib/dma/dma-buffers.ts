/**
 * Which DMA-able memory stands behind a ram region or an ArrayBuffer, so the DMA listener can map a
 * ram region without making its buffer. GuestRam registers every region and window it makes;
 * nothing here loads the addon.
 */
import type { MemoryRegion } from '../memory';
import type { DmaMemory } from '../vfio/dma-types';

/** The DMA-able memory a buffer shows, and from where. */
export interface DmaBufferOwner {
  /** The memory the buffer is a window on (a GuestRam). */
  memory: DmaMemory;
  /** Where the buffer's byte 0 lies in `memory`, in bytes. */
  offset: number;
}

const owners = new WeakMap<ArrayBuffer | SharedArrayBuffer, DmaBufferOwner>();
const regionOwners = new WeakMap<MemoryRegion, DmaBufferOwner>();

/** Record that `buffer` shows `memory` from `offset`. */
export function registerDmaBuffer(
  buffer: ArrayBuffer | SharedArrayBuffer,
  memory: DmaMemory,
  offset: number,
): void {
  owners.set(buffer, { memory, offset });
}

/** The DMA-able memory behind `buffer` and where the buffer starts in it, or undefined. */
export function dmaBufferOwner(buffer: ArrayBuffer | SharedArrayBuffer): DmaBufferOwner | undefined {
  return owners.get(buffer);
}

/**
 * Record that ram region `region` shows `memory` from `offset` (its byte 0 there), whether or not
 * its buffer was made: the DMA listener asks this before the region's buffer.
 */
export function registerDmaRegion(region: MemoryRegion, memory: DmaMemory, offset: number): void {
  regionOwners.set(region, { memory, offset });
}

/** The DMA-able memory behind ram region `region` and where the region starts in it, or undefined. */
export function dmaRegionOwner(region: MemoryRegion): DmaBufferOwner | undefined {
  return regionOwners.get(region);
}
