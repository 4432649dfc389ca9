/**
 * DMA buffers for a test: memfd-backed memory (lib/dma's GuestRam) mapped into the device's IOMMU
 * space at an IOVA of the test's choosing or the next free one, unmapped when the test device is
 * released (or earlier, with close()).
 */
import { ArgRangeError } from '../base/error';
import { PAGE_SIZE } from '../base/page';
import { GuestRam } from '../dma/guest-ram';
import type { DmaMapRequest } from '../vfio/dma-types';

/** Where the IOVAs the helpers choose start: above the low megabyte, below 28 bits for small DMA engines. */
export const DEFAULT_IOVA_BASE = 0x10_0000;

/** Options of {@link TestDevice.dmaBuffer}. */
export interface DmaBufferOptions {
  /** The IOVA (page-aligned); default: the next free one from {@link DEFAULT_IOVA_BASE}. */
  iova?: number;
  /** A name for error messages (default `dma-<iova>`). */
  name?: string;
  /** The device may read it (default true). */
  read?: boolean;
  /** The device may write it (default true). */
  write?: boolean;
}

/** The container calls a DMA buffer needs. */
export interface DmaTarget {
  mapDma(req: DmaMapRequest): void;
  unmapDma(iova: number, size: number): number;
}

/**
 * TestDmaBuffer: `size` bytes (rounded up to whole pages) the device reaches at `iova`. `bytes`
 * is the CPU's view of the same memory.
 */
export class TestDmaBuffer implements Disposable {
  /** The address the device uses for the buffer's first byte (page-aligned). */
  readonly iova: number;
  /** The mapped size: the asked size rounded up to whole pages. */
  readonly size: number;
  /** The memfd-backed memory behind it (closed with the buffer). */
  readonly ram: GuestRam;
  /** The whole buffer, as the CPU sees it (empty after close). */
  readonly bytes: Uint8Array;
  readonly #target: DmaTarget;
  readonly #onClose: (b: TestDmaBuffer) => void;
  #closed = false;

  /** @internal use TestDevice.dmaBuffer */
  constructor(
    target: DmaTarget,
    iova: number,
    size: number,
    opts: DmaBufferOptions,
    onClose: (b: TestDmaBuffer) => void,
  ) {
    if (!Number.isSafeInteger(iova) || iova < 0 || iova % PAGE_SIZE !== 0) {
      throw new ArgRangeError(`iova ${iova} is not a page-aligned address`);
    }
    this.iova = iova;
    this.size = size;
    this.#target = target;
    this.#onClose = onClose;
    this.ram = GuestRam.create(size, { name: opts.name ?? `dma-0x${iova.toString(16)}` });
    try {
      target.mapDma({ iova, size, memory: this.ram, read: opts.read ?? true, write: opts.write ?? true });
    } catch (e) {
      this.ram.close();
      throw e;
    }
    this.bytes = new Uint8Array(this.ram.buffer());
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A DataView of `length` bytes from `offset`. */
  view(offset = 0, length = this.size - offset): DataView {
    return this.ram.view(offset, length);
  }

  /** Unmap from the IOMMU and free the memory. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#target.unmapDma(this.iova, this.size);
    } finally {
      this.ram.close();
      this.#onClose(this);
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Rounds `size` up to whole pages. @throws ArgRangeError for a size that is not a positive integer */
export function pageRound(size: number): number {
  if (!Number.isSafeInteger(size) || size <= 0) throw new ArgRangeError(`DMA buffer size ${size} is not > 0`);
  return Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
}
