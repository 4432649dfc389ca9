/**
 * Which DMA-able memory stands behind an ArrayBuffer, so the DMA listener can map a ram region by
 * its backing. GuestRam registers every window it makes; nothing here loads the addon.
 */
import type { DmaMemory } from '../vfio/dma-types';

/** The DMA-able memory a buffer shows, and from where. */
export interface DmaBufferOwner {
  /** The memory the buffer is a window on (a GuestRam). */
  memory: DmaMemory;
  /** Where the buffer's byte 0 lies in `memory`, in bytes. */
  offset: number;
}

const owners = new WeakMap<ArrayBuffer | SharedArrayBuffer, DmaBufferOwner>();

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
