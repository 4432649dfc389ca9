/**
 * The DMA listener's public face, apart from the listener itself: what it needs of a backend
 * (DmaContainer), what it records and reports (DmaListenerMapping, DmaErrorEvent, DmaCommitError),
 * its options, counters and events. lib/dma/listener.ts hands every name here on.
 */
import { VfioBridgeError } from '../base';
import type { GuestErrorSink } from '../base/guest-error';
import { span, type DmaMapRequest } from '../vfio/dma-types';
import type { DmaSkip } from './plan';

/**
 * The part of a DMA backend the listener uses: a type1 Container or an iommufd Ioas (both are a
 * {@link DmaBackend}), or a fake in unit tests.
 */
export interface DmaContainer {
  /** See {@link Container.mapDma}. */
  mapDma(req: DmaMapRequest): void;
  /** mapDma off the event loop (DmaListener.create uses it for the RAM already in the space). */
  mapDmaAsync?(req: DmaMapRequest): Promise<void>;
  /** See {@link Container.unmapDma}. */
  unmapDma(iova: number, size: number): number;
  /** See {@link Container.iommuInfo}. */
  iommuInfo(): {
    /** The IOMMU's smallest page in bytes: the granularity of every mapping. */
    minPageSize: number;
  };
}

/** One IOMMU mapping the listener made. */
export interface DmaListenerMapping {
  /** The IO virtual address it starts at: the guest-physical address of the mapped memory. */
  readonly iova: number;
  /** Its length in bytes, a whole number of pages. */
  readonly size: number;
  /** The name of the memory region it maps. */
  readonly region: string;
  /** `ram` for guest RAM, `ram-device` for a RAM-device region such as a mapped BAR. */
  readonly kind: 'ram' | 'ram-device';
  /** True when the device may only read (read-only RAM). */
  readonly readonly: boolean;
}

/** A fatal commit: RAM could not be mapped, and the commit was undone. */
export class DmaCommitError extends VfioBridgeError {
  override readonly name: string = 'DmaCommitError';
  /** The absolute guest-physical range that could not be mapped. */
  readonly start: number;
  /** The length in bytes of the range that could not be mapped. */
  readonly size: number;
  /** The name of the memory region the range belongs to. */
  readonly region: string;
  /** Mappings that could not be put back while undoing (empty when the IOMMU is as before). */
  readonly rollbackErrors: unknown[];
  constructor(start: number, size: number, region: string, cause: unknown, rollbackErrors: unknown[]) {
    const why = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
    super({
      code: 'EDMACOMMIT',
      message:
        `DMA map of RAM ${span(start, size)} ('${region}') failed, the commit was undone: ${why}` +
        (rollbackErrors.length > 0 ? ` (and ${rollbackErrors.length} mapping(s) could not be restored)` : ''),
      cause,
      hint: (cause as { hint?: string } | null)?.hint,
    });
    this.start = start;
    this.size = size;
    this.region = region;
    this.rollbackErrors = rollbackErrors;
  }
}

/** A non-fatal DMA failure: a RAM-device map refused, or an unmap the kernel refused. */
export interface DmaErrorEvent {
  /** The absolute guest-physical address (the IOVA) of the range the failed call named. */
  readonly start: number;
  /** The length in bytes of that range. */
  readonly size: number;
  /** The name of the memory region the range belongs to. */
  readonly region: string;
  /** Which call failed: a RAM-device map, or an unmap. */
  readonly op: 'map' | 'unmap';
  /** What the backend threw: usually a VfioError with the kernel's errno. */
  readonly error: unknown;
  /**
   * What became of a failed unmap: `retry` (the kernel may still hold the mapping: it is unmapped
   * again on the next commits, {@link UNMAP_ATTEMPTS} tries in all, with no further event until it
   * is given up), or `dropped` (the listener forgot it: the container holds no such mapping, or the
   * tries ran out and the container, which still records it, unmaps it when it closes).
   */
  readonly outcome?: 'retry' | 'dropped';
}

/** How many times in all an unmap the container may still hold is tried before it is given up. */
export const UNMAP_ATTEMPTS = 4;

/** Options of {@link DmaListener}. */
export interface DmaListenerOptions {
  /**
   * Where skips and failures are reported (source `dma`): the machine's sink. Default: a sink of
   * the listener's own, {@link DmaListener.guestErrors}.
   */
  guestErrors?: GuestErrorSink;
  /** Without `guestErrors`: the own sink's log (`null`: none; events and counters remain). */
  log?: ((line: string) => void) | null;
  /** Without `guestErrors`: the own sink's minimum time between two summary lines, in milliseconds. */
  logIntervalMs?: number;
  /** The host page size (default 4096): RAM is mapped in whole host pages as well as IOMMU pages. */
  hostPageSize?: number;
}

/** Counters of a listener, since it was created. */
export interface DmaListenerStats {
  /** Bytes the listener has mapped now (not a running total: unmaps take it down). */
  mappedBytes: number;
  /** Mappings the listener holds now, orphans whose unmap failed included. */
  mappingCount: number;
  /** Skipped pieces ({@link DmaSkip}) of the sections in the flat view now. */
  skippedCount: number;
  /** Map requests made to the backend since creation, those that failed and those of rollbacks included. */
  mapCalls: number;
  /** Unmap requests made to the backend since creation, those that failed included. */
  unmapCalls: number;
  /** Memory-listener commits since creation: one per transaction of the address space. */
  commits: number;
  /** Commits undone because RAM could not be mapped (`fatal` events) since creation. */
  fatalCount: number;
  /** `dma-error` events since creation: RAM-device maps and unmaps the backend refused. */
  dmaErrorCount: number;
  /**
   * RAM-device maps not asked of the backend because a refusal with EFAULT (pages it cannot pin)
   * already answers them (on iommufd any BAR after the first, on type1 the same piece of the same
   * region): each is a skip, not reported again.
   */
  unaskedMaps: number;
  /** `warning` events since creation: sections skipped in whole or in part. */
  warningCount: number;
  /** Failed unmaps kept to be tried again on the next commits. */
  orphanCount: number;
  /** Failed unmaps the listener forgot: the container held no such mapping, or the tries ran out. */
  droppedUnmaps: number;
}

/** The events of a {@link DmaListener}. */
export type DmaListenerEvents = {
  /**
   * A section that was not mapped, or only in part (see {@link DmaSkip}), on every commit that plans it.
   * @deprecated listen to `guest-error` on {@link DmaListener.guestErrors} (kind `dma-skipped`, each
   *   distinct skip once; the DmaSkip is its `detail`)
   */
  warning: [DmaSkip];
  /**
   * A map or unmap the kernel refused (see {@link DmaErrorEvent}).
   * @deprecated the same is a guest error of kind `dma-map-failed` or `dma-unmap-failed`
   */
  'dma-error': [DmaErrorEvent];
  /**
   * A RAM map failed and the commit was undone.
   * @deprecated the same is a guest error of kind `dma-commit-failed`
   */
  fatal: [DmaCommitError];
};
