/**
 * The RAM-device maps a backend refused with EFAULT, kept so that the DMA listener does not ask
 * again for what cannot succeed.
 *
 * EFAULT from a map means the kernel could not take hold of the memory's pages. How far that
 * reaches depends on the backend:
 * - iommufd pins what it maps (pin_user_pages), and pin_user_pages refuses any mapping without
 *   struct pages (VM_IO or VM_PFNMAP). The refusal is a property of the mapping, not of the range:
 *   no other piece of the same region (one mmap, one VMA) can be mapped either. vfio-pci maps every
 *   BAR that way, so once an IOAS refused one BAR's memory, it refuses every BAR's: device memory
 *   ({@link DmaMemory.deviceMemory}) is not asked again on that IOAS at all.
 * - type1 follows page-frame numbers and faults a BAR's in, which fails only while the device does
 *   not decode: the same piece of the same region is not asked again, any other piece is.
 * @internal
 */
import type { FlatRange } from '../memory';
import type { DmaMapRequest, DmaMemory } from '../vfio/dma-types';

/** How far a refusal reaches: the piece, its whole region, or all device memory of the IOAS. */
export type RefusalScope = 'piece' | 'region' | 'device-memory';

/** A map the backend refused with EFAULT, and what it stands for. @internal */
export interface MapRefusal {
  /** What the backend threw (a VfioError with code EFAULT). */
  readonly error: unknown;
  /** The region whose map was refused (later maps it stands for may be of other regions). */
  readonly region: string;
  readonly scope: RefusalScope;
}

/** The refusals of one listener, that is of one container or IOAS. @internal */
export class MapRefusals {
  readonly #iommufd: boolean;
  #deviceMemory: MapRefusal | null = null;
  readonly #regions = new WeakMap<object, MapRefusal>();
  readonly #pieces = new WeakMap<object, Map<string, MapRefusal>>();

  /** `iommufd`: the backend pins what it maps (an iommufd IOAS). */
  constructor(iommufd: boolean) {
    this.#iommufd = iommufd;
  }

  /** The refusal that already answers a map of `piece` of `region`'s `memory`, if one does. */
  find(region: object, piece: string, memory: DmaMemory): MapRefusal | undefined {
    if (this.#deviceMemory !== null && memory.deviceMemory === true) return this.#deviceMemory;
    return this.#regions.get(region) ?? this.#pieces.get(region)?.get(piece);
  }

  /**
   * Remember that the backend refused `piece` of `region` (named `name`), backed by `memory`, with
   * `error`; only EFAULT is remembered. Returns the refusal, or null when it was not remembered.
   */
  note(region: object, name: string, piece: string, memory: DmaMemory, error: unknown): MapRefusal | null {
    if ((error as { code?: unknown } | null)?.code !== 'EFAULT') return null;
    if (!this.#iommufd) {
      const r: MapRefusal = { error, region: name, scope: 'piece' };
      const pieces = this.#pieces.get(region) ?? new Map<string, MapRefusal>();
      this.#pieces.set(region, pieces.set(piece, r));
      return r;
    }
    if (memory.deviceMemory === true) {
      this.#deviceMemory = { error, region: name, scope: 'device-memory' };
      return this.#deviceMemory;
    }
    const r: MapRefusal = { error, region: name, scope: 'region' };
    this.#regions.set(region, r);
    return r;
  }
}

/** The piece of its region a RAM-device map asks for: where in the region, how much, at which IOVA. */
export function pieceOf(s: FlatRange, req: DmaMapRequest): string {
  return `${s.offsetInRegion} ${req.size} ${req.iova}`;
}

/** What a refusal means for what is not asked after it, as a report and a skip say it. */
export function refusalReach(r: MapRefusal): string {
  switch (r.scope) {
    case 'device-memory':
      return 'iommufd cannot pin device memory, so no BAR on this IOAS is asked again: each is skipped';
    case 'region':
      return 'iommufd cannot pin this mapping, so no piece of this region is asked again: each is skipped';
    case 'piece':
      return 'this piece of this region is not asked again while it stays where it is';
  }
}

/** The message of a skip no map was asked for, because of `r`. */
export function unaskedWhy(r: MapRefusal): string {
  const what = r.scope === 'device-memory' ? `device memory ('${r.region}')` : 'it';
  return `map not asked: the kernel refused ${what} with EFAULT before (${refusalReach(r)})`;
}
