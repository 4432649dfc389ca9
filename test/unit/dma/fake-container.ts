/**
 * A stand-in for a type1 container for the DMA listener's unit tests. It keeps the kernel's rules
 * that matter to the listener: an overlapping map fails (EEXIST), an unmap that would split a
 * mapping fails (EINVAL), an unmap of nothing succeeds with 0 bytes. Failures can be injected, and
 * the IOMMU can be lost as Container loses it when its last group leaves.
 */
import { BufferMemory } from '../../../lib/memory';
import { registerDmaBuffer } from '../../../lib/dma/dma-buffers';
import type { DmaContainer } from '../../../lib/dma/listener';
import { DMA_HANDLE, type DmaMapRequest, type DmaMemory } from '../../../lib/vfio/dma-types';

export interface FakeMapping {
  iova: number;
  size: number;
  offset: number;
  write: boolean;
  memory: DmaMemory;
}

export class FakeError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function noIommu(): FakeError {
  return new FakeError('ENOIOMMU', 'the container has no IOMMU type set');
}

export class FakeContainer implements DmaContainer {
  readonly maps: FakeMapping[] = [];
  readonly log: { op: 'map' | 'unmap'; iova: number; size: number; result?: number }[] = [];
  /** Return an error to make this map fail. */
  failMap: ((req: DmaMapRequest) => Error | undefined) | null = null;
  /** Return an error to make this unmap fail (the mapping stays). */
  failUnmap: ((iova: number, size: number) => Error | undefined) | null = null;
  #iommu = true;
  /** Every unmap that was not exactly one or more whole live mappings. */
  readonly inexactUnmaps: { iova: number; size: number }[] = [];

  constructor(readonly pageSize = 4096) {}

  iommuInfo(): { minPageSize: number } {
    return { minPageSize: this.pageSize };
  }

  /** What Container does when its last group leaves: every mapping goes, and with it the IOMMU. */
  loseIommu(): void {
    this.maps.length = 0;
    this.#iommu = false;
  }

  #checkIommu(): void {
    if (!this.#iommu) throw noIommu();
  }

  mapDma(req: DmaMapRequest): void {
    this.log.push({ op: 'map', iova: req.iova, size: req.size });
    this.#checkIommu();
    const e = this.failMap?.(req);
    if (e) throw e;
    if (req.iova % this.pageSize || req.size % this.pageSize || (req.offset ?? 0) % this.pageSize) {
      throw new FakeError('EINVAL', `unaligned map ${req.iova} ${req.size}`);
    }
    if (this.maps.some((m) => m.iova < req.iova + req.size && req.iova < m.iova + m.size)) {
      throw new FakeError('EEXIST', `overlapping map at ${req.iova}`);
    }
    this.maps.push({
      iova: req.iova,
      size: req.size,
      offset: req.offset ?? 0,
      write: req.write !== false,
      memory: req.memory,
    });
    this.maps.sort((a, b) => a.iova - b.iova);
  }

  unmapDma(iova: number, size: number): number {
    const refused = this.#iommu ? this.failUnmap?.(iova, size) : noIommu();
    if (refused) {
      this.log.push({ op: 'unmap', iova, size });
      throw refused;
    }
    const end = iova + size;
    const hit = this.maps.filter((m) => m.iova < end && iova < m.iova + m.size);
    if (hit.some((m) => m.iova < iova || m.iova + m.size > end)) {
      throw new FakeError('EINVAL', `unmap [${iova}, ${end}) splits a mapping`);
    }
    const bytes = hit.reduce((n, m) => n + m.size, 0);
    if (hit.length === 0 || bytes !== size) this.inexactUnmaps.push({ iova, size });
    for (const m of hit) this.maps.splice(this.maps.indexOf(m), 1);
    this.log.push({ op: 'unmap', iova, size, result: bytes });
    return bytes;
  }

  /** The mappings as comparable tuples. */
  state(): [number, number, number, boolean][] {
    return this.maps.map((m) => [m.iova, m.size, m.offset, m.write]);
  }
}

/** Host memory for RAM regions: the listener finds it through the region's ArrayBuffer. */
export class FakeRam implements DmaMemory {
  readonly buffer: ArrayBuffer;
  constructor(
    readonly length: number,
    readonly dmaName = 'fake RAM',
  ) {
    this.buffer = new ArrayBuffer(length);
  }
  /** A window of the RAM as its own ArrayBuffer, registered at `offset`. */
  window(offset: number, size: number): ArrayBuffer {
    const ab = new ArrayBuffer(size);
    registerDmaBuffer(ab, this, offset);
    return ab;
  }
  [DMA_HANDLE](): never {
    return {} as never;
  }
}

/** Device memory the listener may map (a stand-in for a BAR Mapping). */
export class FakeDeviceMemory extends BufferMemory implements DmaMemory {
  /** As a vfio-pci BAR's Mapping says of itself: memory without pages to pin. */
  constructor(
    length: number,
    readonly deviceMemory = false,
  ) {
    super(length);
  }
  [DMA_HANDLE](): never {
    return {} as never;
  }
}

/** The fake as an iommufd IOAS: what the listener asks the backend is the same, its kind differs. */
export class FakeIoas extends FakeContainer {
  readonly kind = 'iommufd' as const;
}
