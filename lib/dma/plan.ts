/**
 * The DMA listener's decisions for one flat-view section, after QEMU's vfio_listener_region_add: what
 * to map at which IOVA, and which pieces are skipped and why. Pure functions, no IOMMU.
 */
import type { FlatRange } from '../memory';
import { hex } from '../base/values';
import { DMA_HANDLE, span, type DmaMapRequest, type DmaMemory } from '../vfio/dma-types';
import { dmaBufferOwner, dmaRegionOwner } from './dma-buffers';

/** Why a section, or part of one, was not mapped. */
export type DmaSkipReason =
  /** Its guest-physical address and host offset disagree below the page: it cannot be mapped at all. */
  | 'unaligned'
  /** After trimming to whole pages, nothing is left. */
  | 'sub-page'
  /** The head or tail of a RAM section outside its page-aligned interior. */
  | 'trimmed'
  /** A RAM-device section whose start or size is not a multiple of the IOMMU page. */
  | 'unaligned-device'
  /** The region's memory is not host memory the IOMMU can be given (a JavaScript buffer, a fake). */
  | 'no-host-memory'
  /** The kernel (or the container's checks) refused a RAM-device mapping. */
  | 'map-failed';

/** A section (or part) the listener did not map. */
export interface DmaSkip {
  /** The absolute guest-physical address of the skipped piece (its IOVA, had it been mapped). */
  readonly start: number;
  /** The skipped piece's length in bytes. */
  readonly size: number;
  /** The name of the memory region the section belongs to. */
  readonly region: string;
  /** `ram` for guest RAM, `ram-device` for a RAM-device region such as a mapped BAR. */
  readonly kind: 'ram' | 'ram-device';
  /** Why the piece was not mapped. */
  readonly reason: DmaSkipReason;
  /** One line naming the range, the region and the reason, as the listener logs it. */
  readonly message: string;
  /** The error behind a `map-failed` skip. */
  readonly error?: unknown;
}

/** A section's plan: the mapping to make (or null) and the skipped pieces. */
export type Plan = { req: DmaMapRequest | null; skips: DmaSkip[] };

/**
 * planSection: what to map for section `s` and what of it is skipped, by QEMU's rules. RAM is mapped
 * in `ramPage` units (the larger of the host and IOMMU pages), RAM devices in IOMMU `page` units.
 */
export function planSection(s: FlatRange, page: number, ramPage: number): Plan {
  const skips: DmaSkip[] = [];
  if (s.kind === 'io') return { req: null, skips };
  const host = hostMemory(s);
  const end = s.addr + s.size;
  if (host === null) {
    skips.push(
      skipOf(s, s.addr, s.size, 'no-host-memory', 'its memory is not host memory the IOMMU can map'),
    );
    return { req: null, skips };
  }
  const read = true;
  const write = !s.readonly;
  if (s.kind === 'ram-device') {
    if (s.addr % page !== 0 || s.size % page !== 0 || host.offset % page !== 0) {
      skips.push(
        skipOf(
          s,
          s.addr,
          s.size,
          'unaligned-device',
          `not aligned to the IOMMU page size ${hex(page)}: a RAM-device section is mapped only whole`,
        ),
      );
      return { req: null, skips };
    }
    return {
      req: { iova: s.addr, size: s.size, memory: host.memory, offset: host.offset, read, write },
      skips,
    };
  }
  if (s.addr % ramPage !== host.offset % ramPage) {
    skips.push(
      skipOf(
        s,
        s.addr,
        s.size,
        'unaligned',
        `its address and host offset ${hex(host.offset)} disagree below the ${hex(ramPage)} page`,
      ),
    );
    return { req: null, skips };
  }
  const iova = Math.ceil(s.addr / ramPage) * ramPage;
  const last = Math.floor(end / ramPage) * ramPage;
  if (iova >= last) {
    skips.push(skipOf(s, s.addr, s.size, 'sub-page', `no whole ${hex(ramPage)} page in it`));
    return { req: null, skips };
  }
  if (iova > s.addr) {
    skips.push(skipOf(s, s.addr, iova - s.addr, 'trimmed', `below the first whole ${hex(ramPage)} page`));
  }
  if (last < end) {
    skips.push(skipOf(s, last, end - last, 'trimmed', `past the last whole ${hex(ramPage)} page`));
  }
  const offset = host.offset + (iova - s.addr);
  return { req: { iova, size: last - iova, memory: host.memory, offset, read, write }, skips };
}

/** The host memory behind a section and the section's offset in it, or null. */
function hostMemory(s: FlatRange): { memory: DmaMemory; offset: number } | null {
  const r = s.region;
  if (s.kind === 'ram') {
    // By the region first: a lazily-backed one (GuestRam.region) may never have made its buffer.
    const backing = r.allocatedBacking;
    const w = dmaRegionOwner(r) ?? (backing === null ? undefined : dmaBufferOwner(backing));
    if (w === undefined) return null;
    return { memory: w.memory, offset: w.offset + s.offsetInRegion };
  }
  const m = r.memory as Partial<DmaMemory> | null;
  if (m === null || typeof m[DMA_HANDLE] !== 'function') return null;
  return { memory: m as DmaMemory, offset: s.offsetInRegion };
}

/** skipOf: the record of a skipped piece [start, start + size) of section `s`. */
export function skipOf(
  s: FlatRange,
  start: number,
  size: number,
  reason: DmaSkipReason,
  why: string,
  error?: unknown,
): DmaSkip {
  const kind = s.kind as 'ram' | 'ram-device';
  const message = `DMA: skipped ${kind} ${span(start, size)} of '${s.region.name}': ${why}`;
  return Object.freeze({
    start,
    size,
    region: s.region.name,
    kind,
    reason,
    message,
    ...(error !== undefined ? { error } : {}),
  });
}
