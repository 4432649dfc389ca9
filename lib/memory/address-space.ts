/**
 * Address spaces: a root region, the flat view rendered from it, its memory listeners, and what
 * becomes of a guest access no region takes. Guest accesses themselves are dispatch.ts's.
 */
import { ArgTypeError } from '../base/error';
import { emitGuarded } from '../base/events';
import { GuestAccessDispatch } from './dispatch';
import { FlatView } from './flat-view';
import { renderFlatView } from './flat-view-render';
import { flatViewChange, MemoryListeners, type MemoryListener } from './listeners';
import { MemoryRegion } from './region';
import {
  registeredSpaces,
  registerSpace,
  unregisterSpace,
  type Rebuildable,
  type TreeNode,
} from './transaction';
import { MemoryTopologyError } from './types';
import { sinkOf, type GuestErrorSink } from '../base/guest-error';
import { UnassignedReport } from './unassigned-report';
import type { AddressSpaceEvents, UnassignedAccess, UnassignedReason } from './unassigned';

export type { AddressSpaceEvents, MemoryListener, UnassignedAccess };

/** Options of an address space. */
export interface AddressSpaceOptions {
  /**
   * Where refused accesses are reported (source `memory`; kind `unassigned`, `access-rejected`,
   * `access-unaligned`, `access-invalid-size`, `write-readonly` or `bar-fault`): the machine's sink.
   * Default: a sink of the space's own, {@link AddressSpace.guestErrors}.
   */
  guestErrors?: GuestErrorSink;
  /** Without `guestErrors`: the own sink's log (`null`: none; the event and counter remain). */
  log?: ((line: string) => void) | null;
  /** Without `guestErrors`: the own sink's minimum time between two summary lines, in milliseconds. */
  logIntervalMs?: number;
}

const EMPTY = new FlatView([], null);

/**
 * A view of memory from one bus master's side, e.g. "memory" or "I/O": a root region, the flat view
 * rendered from it, and guest accesses dispatched through that view.
 *
 * Guest accesses never throw for guest reasons: unassigned or refused accesses read as all-ones, drop
 * writes, bump {@link AddressSpace.unassignedCount} and are reported to {@link AddressSpace.guestErrors}
 * (source `memory`, kind `unassigned` and the like). Programmer errors (an
 * address that is not a safe non-negative integer, an access that does not end at or below 2^53, an
 * access size outside 1..8, a value of the wrong type or width) are `RangeError`s and `TypeError`s.
 */
export class AddressSpace extends GuestAccessDispatch implements Rebuildable, Disposable {
  /** The name given at construction, e.g. a SystemAddressSpaces' `pci-memory`; it heads log lines and `info mtree`. */
  readonly name: string;
  /** The region the flat view is rendered from; address 0 of the space is offset 0 of `root`. */
  readonly root: MemoryRegion;
  /** The last rendering: what it depended on counts even when its ranges matched the shown ones. */
  private _rendered: FlatView;
  private readonly _listeners = new MemoryListeners();
  private _unassigned = 0;
  private _closed = false;
  /** Where the space reports what the guest's accesses could not do: the machine's sink, or its own. */
  readonly guestErrors: GuestErrorSink;

  constructor(name: string, root: MemoryRegion, opts: AddressSpaceOptions = {}) {
    if (typeof name !== 'string')
      throw new ArgTypeError(`address space name must be a string, got ${typeof name}`);
    if (!(root instanceof MemoryRegion))
      throw new ArgTypeError(`root of address space '${name}' must be a MemoryRegion`);
    const fv = renderFlatView(root);
    super(fv);
    this._rendered = fv;
    this.guestErrors = sinkOf(opts);
    this.name = name;
    this.root = root;
    registerSpace(this);
  }

  /** How many accesses were unassigned or refused since creation. */
  get unassignedCount(): number {
    return this._unassigned;
  }

  /** Whether {@link AddressSpace.close} was called. */
  get closed(): boolean {
    return this._closed;
  }

  /**
   * Subscribes a listener. It first hears `regionAdd` for every range already present (between
   * `begin` and `commit`), then every later change. The returned function unsubscribes it, after
   * telling it `regionDel` for every range still present.
   */
  addMemoryListener(l: MemoryListener): () => void {
    this._assertOpen();
    return this._listeners.add(l, this.flatView.ranges, () => this.flatView.ranges);
  }

  /**
   * Detaches the address space from the topology: listeners hear `regionDel` for everything, the flat
   * view becomes empty, and later accesses throw. Idempotent.
   */
  close(): void {
    if (this._closed) return;
    unregisterSpace(this);
    const errors: unknown[] = [];
    this._install(EMPTY, errors);
    this._closed = true;
    this._listeners.clear();
    this.removeAllListeners();
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `${errors.length} memory listeners failed`);
  }

  /** Same as {@link AddressSpace.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** @internal */
  _dependsOn(changed: ReadonlySet<TreeNode>): boolean {
    return this._rendered.dependsOn(changed);
  }

  /** @internal Called by the outermost commit. */
  _rebuild(errors: unknown[]): void {
    const next = renderFlatView(this.root, this.flatView);
    this._rendered = next;
    this._install(next, errors);
  }

  /** Shows `next` and tells the listeners what changed, if anything did. */
  private _install(next: FlatView, errors: unknown[]): void {
    const change = flatViewChange(this.flatView, next);
    if (change === null) return;
    this._show(next);
    this._listeners.notify(change, errors);
  }

  protected _assertOpen(): void {
    if (this._closed) throw new MemoryTopologyError('closed', `address space '${this.name}' is closed`);
  }

  protected _report(
    addr: number,
    size: number,
    isWrite: boolean,
    reason: UnassignedReason,
    r?: MemoryRegion,
    error?: unknown,
  ): void {
    this._unassigned++;
    const e: UnassignedAccess = { addr, size, isWrite, reason };
    if (r !== undefined) e.region = r.name;
    if (error !== undefined) e.error = error;
    this.guestErrors.report(new UnassignedReport(this.name, e));
    // The deprecated event. A throwing subscriber must not turn a guest access into a VMM
    // exception, nor stop the rest of a split access half-way.
    if (this.listenerCount('unassigned') > 0) {
      emitGuarded(this, 'unassigned', [e], (err) =>
        this.guestErrors.report({
          source: 'memory',
          kind: 'listener-threw',
          where: this.name,
          action: 'ignored',
          message: `${this.name}: an 'unassigned' listener threw: ${err instanceof Error ? err.message : String(err)}`,
          error: err,
        }),
      );
    }
  }
}

/** Where an open address space shows a ram region (see {@link ramShownBy}). */
export interface RamInUse {
  /** The address space's name. */
  readonly space: string;
  /** The ram region's name. */
  readonly region: string;
}

/**
 * ramShownBy: every open address space whose current flat view shows a ram region backed by one of
 * `backings`, or one of `regions` (lazily-backed ones whose buffer may not be made yet), directly
 * or through an alias. An owner asks this before it frees such memory: a range the flat view still
 * holds is what guest accesses, the DMA listener and KVM slots use.
 * @internal
 */
export function ramShownBy(
  backings: ReadonlySet<ArrayBuffer | SharedArrayBuffer>,
  regions: ReadonlySet<MemoryRegion> = new Set(),
): RamInUse[] {
  const out: RamInUse[] = [];
  for (const s of registeredSpaces()) {
    if (!(s instanceof AddressSpace)) continue;
    const seen = new Set<MemoryRegion>();
    for (const r of s.flatView.ranges) {
      if (r.kind !== 'ram' || seen.has(r.region)) continue;
      const b = r.region.allocatedBacking;
      if (!regions.has(r.region) && (b === null || !backings.has(b))) continue;
      seen.add(r.region);
      out.push({ space: s.name, region: r.region.name });
    }
  }
  return out;
}
