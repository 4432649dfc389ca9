/**
 * The DMA listener: keeps a container's IOMMU mappings equal to the DMA-able sections of an address
 * space, with QEMU's vfio listener semantics (hw/vfio/common.c, as relaxed for MMIO regions):
 * - RAM is mapped at IOVA = guest-physical address, read-only RAM read-only for the device; a RAM
 *   section whose address and host offset disagree below the page is skipped, and only the
 *   page-aligned interior of any other section is mapped (the trimmed edges are reported);
 * - RAM-device sections (BARs: peer-to-peer DMA) are mapped only when start, size and host offset
 *   are page-aligned, and a failure to map one is reported, never fatal; what a map the kernel
 *   refused with EFAULT stands for is not asked again, nor reported again, only recorded as a skip
 *   (refusals.ts): on iommufd, which cannot pin a BAR's pages, no BAR on the IOAS at all after the
 *   first, on type1 the same piece of the same region when a decode toggle brings it back;
 * - a failure to map RAM is fatal for the commit: everything the commit did is undone, so the
 *   IOMMU is exactly as it was before it, and the sections it could not apply are retried on the
 *   next commit;
 * - a removed section unmaps exactly what was recorded for it, never a skipped one; an unmap that
 *   fails is forgotten when the container holds no such mapping, and otherwise tried again on the
 *   next commits a bounded number of times, reported once when it fails and once when given up.
 * Every message names the absolute guest-physical range and the region. Nothing here throws at the
 * VMM for a guest's doing: problems are events, counters and a rate-limited log.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { EventEmitter } from 'node:events';

import { VfioBridgeError } from '../base';
import { emitGuarded } from '../base/events';
import type { AddressSpace, FlatRange, MemoryListener } from '../memory';
import { sinkOf, type GuestErrorSink } from '../base/guest-error';
import { span, type DmaBackend, type DmaMapRequest } from '../vfio/dma-types';
import { planSection, skipOf, type DmaSkip } from './plan';
import { MapRefusals, refusalReach, unaskedWhy, type MapRefusal } from './refusals';

export type { DmaSkip, DmaSkipReason } from './plan';

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

/**
 * The codes a container answers an unmap with when it holds no such mapping, so no retry can help:
 * `ENOTMAPPED` (not in its record), `ENOIOMMU` (its IOMMU, and every mapping with it, went when its
 * last group left), `ECLOSED` (closing unmapped everything), `EDMASTATE` (the kernel held less than
 * recorded, and the record dropped it).
 */
const NOT_HELD: ReadonlySet<unknown> = new Set(['ENOTMAPPED', 'ENOIOMMU', 'ECLOSED', 'EDMASTATE']);

function notHeld(e: unknown): boolean {
  return e !== null && typeof e === 'object' && NOT_HELD.has((e as { code?: unknown }).code);
}

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

interface Mapped {
  readonly section: FlatRange;
  readonly req: DmaMapRequest;
  readonly info: DmaListenerMapping;
}

interface Entry {
  readonly section: FlatRange;
  /** The mapping made for the section, if any. */
  readonly mapped: Mapped | null;
  readonly skips: readonly DmaSkip[];
}

function firstLine(e: unknown): string {
  return e instanceof Error ? e.message.split('\n')[0] : String(e);
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

/**
 * Follows `space` and keeps the IOMMU of `container` (either backend: a type1 Container or an
 * iommufd Ioas) in step with it. Events: `warning` (a skipped
 * section, {@link DmaSkip}), `dma-error` (a RAM-device map or an unmap that failed,
 * {@link DmaErrorEvent}), `fatal` (a RAM map failed and the commit was undone, {@link DmaCommitError}).
 */
export class DmaListener extends EventEmitter<DmaListenerEvents> implements MemoryListener, Disposable {
  /** The DMA backend the listener maps into (a Container, an Ioas, or a fake). */
  readonly container: DmaContainer;
  /** The address space followed: its DMA-able sections are what the listener maps. */
  readonly space: AddressSpace;
  /** The IOMMU page: the granularity of RAM-device mappings. */
  readonly pageSize: number;
  /** max(IOMMU page, host page): the granularity of RAM mappings. */
  readonly ramPageSize: number;
  readonly #entries = new Map<FlatRange, Entry>();
  /**
   * Entries the kernel may still map although their section left the flat view (an unmap failed, or
   * a commit was undone), with the unmap attempts that failed so far.
   */
  readonly #orphans = new Map<Entry, number>();
  /** Sections in the flat view that a commit that was undone did not get to record. */
  readonly #missing = new Set<FlatRange>();
  #dels: FlatRange[] = [];
  #adds: FlatRange[] = [];
  readonly #stats: DmaListenerStats = {
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
  /** Where the listener reports skips and failures (source `dma`): the machine's sink, or its own. */
  readonly guestErrors: GuestErrorSink;
  /** The skips reported so far: a section re-planned by a later commit is not reported again. */
  readonly #reportedSkips = new Set<string>();
  /** The RAM-device maps the kernel refused with EFAULT, and what each stands for. */
  readonly #refusals: MapRefusals;
  #lastFatal: DmaCommitError | null = null;
  #unsubscribe: (() => void) | null = null;
  #closed = false;
  /** RAM mapped before the listener subscribed (DmaListener.create): its first commit adopts them. */
  #premapped: Map<FlatRange, DmaMapRequest> | null = null;

  /**
   * Start listening: every DMA-able section already in `space` is mapped now.
   * @throws DmaCommitError when RAM already in `space` cannot be mapped (nothing stays mapped)
   */
  constructor(
    container: DmaContainer,
    space: AddressSpace,
    opts: DmaListenerOptions = {},
    premapped: Map<FlatRange, DmaMapRequest> | null = null,
  ) {
    if (container === null || typeof container !== 'object' || typeof container.mapDma !== 'function') {
      throw new ArgTypeError(
        'DmaListener needs a DMA backend (a Container, an Ioas, or one with mapDma/unmapDma/iommuInfo)',
      );
    }
    super();
    const sink = sinkOf(opts);
    const host = opts.hostPageSize ?? 4096;
    if (!Number.isSafeInteger(host) || host <= 0 || (host & (host - 1)) !== 0) {
      throw new ArgRangeError(`hostPageSize ${String(host)} is not a power of two`);
    }
    this.guestErrors = sink;
    this.container = container;
    this.space = space;
    this.pageSize = container.iommuInfo().minPageSize;
    this.ramPageSize = Math.max(this.pageSize, host);
    this.#refusals = new MapRefusals(this.backend === 'iommufd');
    this.#premapped = premapped;
    this.#unsubscribe = space.addMemoryListener(this);
    // What was mapped ahead and has left the flat view since is unmapped: the record stays exact.
    if (premapped !== null) {
      for (const req of premapped.values()) {
        try {
          container.unmapDma(req.iova, req.size);
        } catch {
          // Nothing a caller can do: it was never the listener's, and the container keeps its record.
        }
      }
      this.#premapped = null;
    }
    // The first commit maps the RAM already in the space. Nobody can have subscribed to `fatal` yet,
    // and a VMM must not go on with guest RAM the device cannot reach: this one is thrown.
    const fatal = this.#lastFatal;
    if (fatal !== null) {
      this.close();
      throw fatal;
    }
  }

  /**
   * A listener whose first commit does not hold the event loop: the RAM sections already in
   * `space` are mapped on the libuv thread pool first (`container.mapDmaAsync`), then the listener
   * subscribes and adopts them. Pinning a large guest RAM takes the kernel hundreds of ms to
   * seconds. A RAM section that cannot be mapped rejects with the kernel's error, nothing left mapped.
   */
  static async create(
    container: DmaContainer,
    space: AddressSpace,
    opts: DmaListenerOptions = {},
  ): Promise<DmaListener> {
    const ahead = new Map<FlatRange, DmaMapRequest>();
    if (typeof container?.mapDmaAsync === 'function') {
      const page = container.iommuInfo().minPageSize;
      const ramPage = Math.max(page, opts.hostPageSize ?? 4096);
      try {
        for (const s of space.flatView.ranges) {
          if (s.kind !== 'ram') continue;
          const req = planSection(s, page, ramPage).req;
          if (req === null) continue;
          await container.mapDmaAsync(req);
          ahead.set(s, req);
        }
      } catch (e) {
        for (const req of ahead.values()) container.unmapDma(req.iova, req.size);
        throw e;
      }
    }
    return new DmaListener(container, space, opts, ahead);
  }

  /** The backend's kind (`type1`, `iommufd`), or null for a container that does not say (a fake). */
  get backend(): DmaBackend['kind'] | null {
    const k = (this.container as Partial<DmaBackend>).kind;
    return k === 'type1' || k === 'iommufd' ? k : null;
  }

  /** Counters since creation. */
  get stats(): Readonly<DmaListenerStats> {
    let skipped = 0;
    for (const e of this.#entries.values()) skipped += e.skips.length;
    return { ...this.#stats, skippedCount: skipped, orphanCount: this.#orphans.size };
  }

  /** The last fatal commit, or null. */
  get lastFatal(): DmaCommitError | null {
    return this.#lastFatal;
  }

  /** The IOMMU mappings the listener holds, in IOVA order. */
  mappings(): DmaListenerMapping[] {
    // The kernel also holds the orphans: mappings an undone commit put back, and those whose
    // unmap failed; they are counted in stats.mappingCount too.
    const held = new Set([...this.#entries.values(), ...this.#orphans.keys()]);
    const out: DmaListenerMapping[] = [];
    for (const e of held) if (e.mapped) out.push(e.mapped.info);
    return out.sort((a, b) => a.iova - b.iova);
  }

  /** Sections (or parts) of the current record that were not mapped, with the reason. */
  skipped(): DmaSkip[] {
    const out: DmaSkip[] = [];
    for (const e of this.#entries.values()) out.push(...e.skips);
    return out.sort((a, b) => a.start - b.start);
  }

  /** Whether the IOMMU is behind the flat view because a commit was undone (retried on the next one). */
  get pending(): boolean {
    return this.#orphans.size > 0 || this.#missing.size > 0;
  }

  // MemoryListener ------------------------------------------------------------------------------

  begin(): void {
    this.#dels = [];
    this.#adds = [];
  }

  regionDel(s: FlatRange): void {
    this.#dels.push(s);
  }

  regionAdd(s: FlatRange): void {
    this.#adds.push(s);
  }

  commit(): void {
    const dels = this.#dels;
    const adds = this.#adds;
    this.#dels = [];
    this.#adds = [];
    this.#stats.commits++;
    this.#apply(dels, adds);
  }

  // The commit ----------------------------------------------------------------------------------

  #apply(dels: FlatRange[], adds: FlatRange[]): void {
    const removed: Entry[] = [];
    const unmapped: Entry[] = [];
    const added: Entry[] = [];
    const unmapOne = (e: Entry): void => {
      if (e.mapped === null) return;
      const { iova, size } = e.mapped.info;
      this.#stats.unmapCalls++;
      this.container.unmapDma(iova, size);
      unmapped.push(e);
    };
    // Unmaps first: a section's new place may overlap its old one.
    for (const s of dels) {
      if (this.#missing.delete(s)) continue; // never mapped: nothing to undo
      const e = this.#entries.get(s);
      if (e === undefined) continue;
      this.#entries.delete(s);
      try {
        unmapOne(e);
      } catch (err) {
        this.#unmapFailed(e, 0, err);
        continue;
      }
      removed.push(e);
    }
    for (const [e, failed] of [...this.#orphans]) {
      this.#orphans.delete(e);
      try {
        unmapOne(e);
        removed.push(e);
      } catch (err) {
        this.#unmapFailed(e, failed, err);
      }
    }
    const toAdd = adds.slice();
    for (const s of this.#missing) toAdd.push(s);
    this.#missing.clear();
    const warnings: DmaSkip[] = [];
    for (let k = 0; k < toAdd.length; k++) {
      const s = toAdd[k];
      const plan = planSection(s, this.pageSize, this.ramPageSize);
      let mapped: Mapped | null = null;
      const skips = plan.skips;
      const req = plan.req;
      const refused =
        req !== null && s.kind !== 'ram'
          ? this.#refusals.find(s.region, pieceOf(s, req), req.memory)
          : undefined;
      if (req !== null && refused !== undefined) {
        skips.push(skipOf(s, req.iova, req.size, 'map-failed', unaskedWhy(refused), refused.error));
        this.#stats.unaskedMaps++;
      } else if (req !== null) {
        const ahead = this.#premapped?.get(s);
        try {
          if (ahead !== undefined && sameRequest(ahead, req)) {
            this.#premapped!.delete(s);
          } else {
            this.#stats.mapCalls++;
            this.container.mapDma(req);
          }
          mapped = { section: s, req, info: this.#info(s, req) };
        } catch (err) {
          if (s.kind === 'ram') {
            this.#fatal(s, req, err, { removed, unmapped, added, rest: toAdd.slice(k) });
            return;
          }
          skips.push(skipOf(s, req.iova, req.size, 'map-failed', `map failed: ${firstLine(err)}`, err));
          const r = this.#refusals.note(s.region, s.region.name, pieceOf(s, req), req.memory, err);
          this.#mapFailed({ iova: req.iova, size: req.size, region: s.region.name }, err, r);
        }
      }
      const e: Entry = { section: s, mapped, skips };
      this.#entries.set(s, e);
      added.push(e);
      warnings.push(...skips);
    }
    for (const e of removed) this.#account(e, -1);
    for (const e of added) this.#account(e, +1);
    for (const w of warnings) this.#warn(w);
  }

  #info(s: FlatRange, req: DmaMapRequest): DmaListenerMapping {
    return Object.freeze({
      iova: req.iova,
      size: req.size,
      region: s.region.name,
      kind: s.kind as 'ram' | 'ram-device',
      readonly: req.write === false,
    });
  }

  /** mappedBytes and mappingCount follow what the kernel holds: the record and the orphans. */
  #account(e: Entry, sign: 1 | -1): void {
    if (e.mapped) {
      this.#stats.mappedBytes += sign * e.mapped.info.size;
      this.#stats.mappingCount += sign;
    }
  }

  /**
   * A RAM map failed: undo this commit (unmap what it mapped, map back what it unmapped) so the
   * IOMMU is as before, keep the old record, and remember the flat-view changes for the next commit.
   */
  #fatal(
    s: FlatRange,
    req: DmaMapRequest,
    cause: unknown,
    done: { removed: Entry[]; unmapped: Entry[]; added: Entry[]; rest: FlatRange[] },
  ): void {
    const rollbackErrors: unknown[] = [];
    for (const e of done.added.reverse()) {
      this.#entries.delete(e.section);
      if (e.mapped === null) continue;
      try {
        this.#stats.unmapCalls++;
        this.container.unmapDma(e.mapped.info.iova, e.mapped.info.size);
      } catch (err) {
        rollbackErrors.push(err);
        // Maybe still mapped in the kernel: keep it recorded as an orphan so it is unmapped later.
        if (!notHeld(err)) {
          this.#orphans.set(e, 1);
          this.#account(e, +1);
        }
      }
    }
    const removedSet = new Set(done.removed);
    for (const e of done.unmapped.reverse()) {
      if (!removedSet.has(e)) continue;
      try {
        this.#stats.mapCalls++;
        this.container.mapDma(e.mapped!.req);
        this.#orphans.set(e, 0); // its section is gone from the flat view (or it was an orphan already)
      } catch (err) {
        rollbackErrors.push(err);
        // Not in the kernel any more, so not in the record either.
        this.#account(e, -1);
      }
    }
    // Everything this commit meant to add is still to be mapped.
    for (const e of done.added) this.#missing.add(e.section);
    for (const x of done.rest) this.#missing.add(x);
    const err = new DmaCommitError(req.iova, req.size, s.region.name, cause, rollbackErrors);
    this.#stats.fatalCount++;
    this.#lastFatal = err;
    this.guestErrors.report({
      source: 'dma',
      kind: 'dma-commit-failed',
      where: s.region.name,
      address: req.iova,
      size: req.size,
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
   * as an orphan until {@link UNMAP_ATTEMPTS} tries failed. Only the first failure and the end are
   * reported, so a mapping that cannot go does not fill the log one commit after another.
   */
  #unmapFailed(e: Entry, failed: number, err: unknown, closing = false): void {
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
      this.#orphans.set(e, failed + 1);
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
  #drop(e: Entry): void {
    this.#stats.droppedUnmaps++;
    this.#account(e, -1);
  }

  /**
   * A RAM-device map the backend refused, reported once: with what the refusal `r` stands for
   * (the maps it answers from now on are skips, not reports), or null when it stands for nothing.
   */
  #mapFailed(m: { iova: number; size: number; region: string }, err: unknown, r: MapRefusal | null): void {
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
    this.#stats.dmaErrorCount++;
    const ev: DmaErrorEvent = {
      start: m.iova,
      size: m.size,
      region: m.region,
      op,
      error,
      ...(outcome !== undefined ? { outcome } : {}),
    };
    const rest = then !== undefined ? `; ${then}` : '';
    this.guestErrors.report({
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

  #warn(w: DmaSkip): void {
    this.#stats.warningCount++;
    // A map-failed skip is reported as its dma-map-failed; the others once per distinct section.
    const key = `${w.region} ${w.start} ${w.size} ${w.reason}`;
    if (w.reason !== 'map-failed' && !this.#reportedSkips.has(key)) {
      this.#reportedSkips.add(key);
      this.guestErrors.report({
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
    if (this.listenerCount(event) === 0) return;
    emitGuarded(this, event, args, (e) =>
      this.guestErrors.report({
        source: 'dma',
        kind: 'listener-threw',
        action: 'ignored',
        message: `DMA: a '${event}' listener threw: ${firstLine(e)}`,
        error: e,
      }),
    );
  }

  /**
   * Stop listening and unmap everything the listener mapped. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const unsubscribe = this.#unsubscribe;
    this.#unsubscribe = null;
    unsubscribe?.();
    this.#missing.clear();
    for (const e of [...this.#orphans.keys()]) {
      this.#orphans.delete(e);
      try {
        this.#stats.unmapCalls++;
        this.container.unmapDma(e.mapped!.info.iova, e.mapped!.info.size);
        this.#account(e, -1);
      } catch (err) {
        this.#unmapFailed(e, 0, err, true);
      }
    }
  }

  /** Same as {@link DmaListener.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
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

/** The piece of its region a RAM-device map asks for: where in the region, how much, at which IOVA. */
function pieceOf(s: FlatRange, req: DmaMapRequest): string {
  return `${s.offsetInRegion} ${req.size} ${req.iova}`;
}

/** Two map requests for the same memory, offset, IOVA, size and rights. */
function sameRequest(a: DmaMapRequest, b: DmaMapRequest): boolean {
  return (
    a.memory === b.memory &&
    (a.offset ?? 0) === (b.offset ?? 0) &&
    a.iova === b.iova &&
    a.size === b.size &&
    a.read === b.read &&
    a.write === b.write
  );
}
