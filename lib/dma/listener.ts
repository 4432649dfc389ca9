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

import type { AddressSpace, FlatRange, MemoryListener } from '../memory';
import { sinkOf, type GuestErrorSink } from '../base/guest-error';
import { type DmaBackend, type DmaMapRequest } from '../vfio/dma-types';
import { ListenerReports, firstLine, notHeld } from './listener-reports';
import {
  DmaCommitError,
  type DmaContainer,
  type DmaListenerEvents,
  type DmaListenerMapping,
  type DmaListenerOptions,
  type DmaListenerStats,
} from './listener-types';
import { planSection, skipOf, type DmaSkip } from './plan';
import { mapAhead, sameRequest, unmapUnadopted } from './map-ahead';
import { MapRefusals, pieceOf, unaskedWhy } from './refusals';

export type { DmaSkip, DmaSkipReason } from './plan';
export {
  DmaCommitError,
  UNMAP_ATTEMPTS,
  type DmaContainer,
  type DmaErrorEvent,
  type DmaListenerEvents,
  type DmaListenerMapping,
  type DmaListenerOptions,
  type DmaListenerStats,
} from './listener-types';

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
  /** The counters and the reports of skips and failures. */
  readonly #reports: ListenerReports;
  /** The counters ({@link ListenerReports.stats}), which the commit counts in. */
  readonly #stats: DmaListenerStats;
  /** Where the listener reports skips and failures (source `dma`): the machine's sink, or its own. */
  readonly guestErrors: GuestErrorSink;
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
    this.#reports = new ListenerReports(this, sink);
    this.#stats = this.#reports.stats;
    this.container = container;
    this.space = space;
    this.pageSize = container.iommuInfo().minPageSize;
    this.ramPageSize = Math.max(this.pageSize, host);
    this.#refusals = new MapRefusals(this.backend === 'iommufd');
    this.#premapped = premapped;
    this.#unsubscribe = space.addMemoryListener(this);
    // What was mapped ahead and has left the flat view since is unmapped: the record stays exact.
    if (premapped !== null) {
      unmapUnadopted(container, premapped);
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
    return new DmaListener(container, space, opts, await mapAhead(container, space, opts.hostPageSize));
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
          this.#reports.mapFailed({ iova: req.iova, size: req.size, region: s.region.name }, err, r);
        }
      }
      const e: Entry = { section: s, mapped, skips };
      this.#entries.set(s, e);
      added.push(e);
      warnings.push(...skips);
    }
    for (const e of removed) this.#reports.account(e, -1);
    for (const e of added) this.#reports.account(e, +1);
    for (const w of warnings) this.#reports.warn(w);
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
          this.#reports.account(e, +1);
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
        this.#reports.account(e, -1);
      }
    }
    // Everything this commit meant to add is still to be mapped.
    for (const e of done.added) this.#missing.add(e.section);
    for (const x of done.rest) this.#missing.add(x);
    const err = new DmaCommitError(req.iova, req.size, s.region.name, cause, rollbackErrors);
    this.#lastFatal = err;
    this.#reports.commitFailed(err, cause);
  }

  /** An unmap of `e` failed after `failed` earlier failures: see {@link ListenerReports.unmapFailed}. */
  #unmapFailed(e: Entry, failed: number, err: unknown, closing = false): void {
    this.#reports.unmapFailed(e, failed, err, closing, () => this.#orphans.set(e, failed + 1));
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
        this.#reports.account(e, -1);
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
