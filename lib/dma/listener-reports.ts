/**
 * What a DMA listener says and counts: its counters (DmaListenerStats, the mapped bytes following
 * what the kernel holds), and each skip and failure as a guest error (source `dma`) and as the
 * deprecated event, with the rule of which are said once and which every time. The listener keeps
 * its record and decides; this says it.
 * @internal
 */
import type { EventEmitter } from 'node:events';

import { emitGuarded } from '../base/events';
import type { GuestErrorSink } from '../base/guest-error';
import { span } from '../vfio/dma-types';
import {
  UNMAP_ATTEMPTS,
  type DmaCommitError,
  type DmaErrorEvent,
  type DmaListenerEvents,
  type DmaListenerMapping,
  type DmaListenerStats,
} from './listener-types';
import type { DmaSkip } from './plan';
import { refusalReach, type MapRefusal } from './refusals';

/**
 * The codes a container answers an unmap with when it holds no such mapping, so no retry can help:
 * `ENOTMAPPED` (not in its record), `ENOIOMMU` (its IOMMU, and every mapping with it, went when its
 * last group left), `ECLOSED` (closing unmapped everything), `EDMASTATE` (the kernel held less than
 * recorded, and the record dropped it).
 */
const NOT_HELD: ReadonlySet<unknown> = new Set(['ENOTMAPPED', 'ENOIOMMU', 'ECLOSED', 'EDMASTATE']);

/** Whether `e` says the container holds no such mapping. @internal */
export function notHeld(e: unknown): boolean {
  return e !== null && typeof e === 'object' && NOT_HELD.has((e as { code?: unknown }).code);
}

/** The first line of an error's message (or of what was thrown). @internal */
export function firstLine(e: unknown): string {
  return e instanceof Error ? e.message.split('\n')[0] : String(e);
}

/** A record entry as far as the reports look at it: the mapping made for it, if any. @internal */
export interface Held {
  readonly mapped: { readonly info: DmaListenerMapping } | null;
}

/** The counters and reports of one DmaListener. @internal */
export class ListenerReports {
  /** The counters; skippedCount and orphanCount are the listener's to fill in when read. */
  readonly stats: DmaListenerStats = {
    mappedBytes: 0,
    mappingCount: 0,
    skippedCount: 0,
    mapCalls: 0,
    unmapCalls: 0,
    commits: 0,
    fatalCount: 0,
    dmaErrorCount: 0,
    unaskedMaps: 0,
    warningCount: 0,
    orphanCount: 0,
    droppedUnmaps: 0,
  };
  readonly #emitter: EventEmitter<DmaListenerEvents>;
  readonly #guestErrors: GuestErrorSink;
  /** The skips reported so far: a section re-planned by a later commit is not reported again. */
  readonly #reportedSkips = new Set<string>();

  /** `emitter`: the listener, whose deprecated events are emitted; `guestErrors`: its sink. */
  constructor(emitter: EventEmitter<DmaListenerEvents>, guestErrors: GuestErrorSink) {
    this.#emitter = emitter;
    this.#guestErrors = guestErrors;
  }

  /** mappedBytes and mappingCount follow what the kernel holds: the record and the orphans. */
  account(e: Held, sign: 1 | -1): void {
    if (e.mapped) {
      this.stats.mappedBytes += sign * e.mapped.info.size;
      this.stats.mappingCount += sign;
    }
  }

  /** A RAM map failed and the commit was undone: `err` says so, `cause` is what the backend threw. */
  commitFailed(err: DmaCommitError, cause: unknown): void {
    this.stats.fatalCount++;
    this.#guestErrors.report({
      source: 'dma',
      kind: 'dma-commit-failed',
      where: err.region,
      address: err.start,
      size: err.size,
      action: 'undone',
      message: err.message,
      hint: err.hint ?? 'devices cannot reach this RAM; the sections are tried again on the next commit',
      error: cause,
      detail: err,
    });
    this.#emit('fatal', err);
  }

  /**
   * An unmap of `e` failed after `failed` earlier failures (its section is out of the record). Retrying
   * is bounded: a mapping the container no longer holds is forgotten at once, another one is kept
   * (`keep`: the listener makes it an orphan) until {@link UNMAP_ATTEMPTS} tries failed. Only the
   * first failure and the end are reported, so a mapping that cannot go does not fill the log one
   * commit after another.
   */
  unmapFailed(e: Held, failed: number, err: unknown, closing: boolean, keep: () => void): void {
    const m = e.mapped!.info;
    if (notHeld(err)) {
      this.#drop(e);
      this.#dmaError(m, 'unmap', err, 'dropped', 'the container holds no such mapping, so it is forgotten');
    } else if (closing || failed + 1 >= UNMAP_ATTEMPTS) {
      this.#drop(e);
      const why = closing ? 'the listener closed' : `given up after ${UNMAP_ATTEMPTS} tries`;
      this.#dmaError(
        m,
        'unmap',
        err,
        'dropped',
        `${why}: the container still records it and unmaps it when closed`,
      );
    } else {
      keep();
      if (failed === 0) {
        this.#dmaError(
          m,
          'unmap',
          err,
          'retry',
          `tried again on the next commits, ${UNMAP_ATTEMPTS} tries in all`,
        );
      }
    }
  }

  /** Forget an entry the kernel no longer holds (or that the container is left to unmap). */
  #drop(e: Held): void {
    this.stats.droppedUnmaps++;
    this.account(e, -1);
  }

  /**
   * A RAM-device map the backend refused, reported once: with what the refusal `r` stands for
   * (the maps it answers from now on are skips, not reports), or null when it stands for nothing.
   */
  mapFailed(m: { iova: number; size: number; region: string }, err: unknown, r: MapRefusal | null): void {
    const hint =
      r?.scope === 'device-memory'
        ? 'peer-to-peer DMA to every BAR on this IOAS fails (iommufd pins what it maps, and a BAR has ' +
          'no pages); nothing else does. The type1 backend maps BARs'
        : undefined;
    this.#dmaError(m, 'map', err, undefined, r === null ? undefined : refusalReach(r), hint);
  }

  #dmaError(
    m: { iova: number; size: number; region: string },
    op: 'map' | 'unmap',
    error: unknown,
    outcome?: 'retry' | 'dropped',
    then?: string,
    hint?: string,
  ): void {
    this.stats.dmaErrorCount++;
    const ev: DmaErrorEvent = {
      start: m.iova,
      size: m.size,
      region: m.region,
      op,
      error,
      ...(outcome !== undefined ? { outcome } : {}),
    };
    const rest = then !== undefined ? `; ${then}` : '';
    this.#guestErrors.report({
      source: 'dma',
      kind: op === 'map' ? 'dma-map-failed' : 'dma-unmap-failed',
      where: m.region,
      address: m.iova,
      size: m.size,
      action: op === 'map' ? 'skipped' : outcome === 'retry' ? 'retried' : 'forgotten',
      message: `DMA: ${op} of ${span(m.iova, m.size)} ('${m.region}') failed: ${firstLine(error)}${rest}`,
      hint:
        hint ??
        (op === 'map'
          ? 'peer-to-peer DMA to this BAR fails; nothing else does'
          : 'the IOMMU may still map it until the container closes'),
      error,
      detail: ev,
    });
    this.#emit('dma-error', ev);
  }

  /** A skipped section, or part of one: counted and emitted each time, reported once. */
  warn(w: DmaSkip): void {
    this.stats.warningCount++;
    // A map-failed skip is reported as its dma-map-failed; the others once per distinct section.
    const key = `${w.region} ${w.start} ${w.size} ${w.reason}`;
    if (w.reason !== 'map-failed' && !this.#reportedSkips.has(key)) {
      this.#reportedSkips.add(key);
      this.#guestErrors.report({
        source: 'dma',
        kind: 'dma-skipped',
        where: w.region,
        address: w.start,
        size: w.size,
        action: 'skipped',
        message: w.message,
        hint: SKIP_HINTS[w.reason],
        detail: w,
      });
    }
    this.#emit('warning', w);
  }

  // A throwing event handler must not abort a commit half-way.
  #emit<K extends keyof DmaListenerEvents>(event: K, ...args: DmaListenerEvents[K]): void {
    if (this.#emitter.listenerCount(event) === 0) return;
    emitGuarded(this.#emitter, event, args, (e) =>
      this.#guestErrors.report({
        source: 'dma',
        kind: 'listener-threw',
        action: 'ignored',
        message: `DMA: a '${event}' listener threw: ${firstLine(e)}`,
        error: e,
      }),
    );
  }
}

/** What usually leaves a section unmapped, by reason. */
const SKIP_HINTS: Record<DmaSkip['reason'], string> = {
  unaligned: 'its guest-physical address and host offset disagree below the page',
  'sub-page': 'less than a page is left once trimmed to whole pages',
  trimmed: 'RAM is mapped in whole pages; the edges are not',
  'unaligned-device': 'a BAR section not aligned to the IOMMU page: peer-to-peer DMA to it fails',
  'no-host-memory': 'its memory is not host memory the IOMMU can map',
  'map-failed': 'the kernel refused the mapping',
};
