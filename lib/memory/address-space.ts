/**
 * Address spaces: a root region, its flat view, guest access dispatch and memory listeners.
 */
import { EventEmitter } from 'node:events';

import { ArgTypeError } from '../base/error';
import { emitGuarded } from '../base/events';
import {
  ioInvalidReason,
  ioRead,
  ioWrite,
  needsSplit,
  ones,
  pieceSize,
  widestPiece,
  type UnassignedReason,
} from './dispatch';
import { FlatView, renderFlatView, type FlatRange } from './flat-view';
import { K_RAM, K_RAM_DEVICE, MemoryRegion } from './region';
import {
  registeredSpaces,
  registerSpace,
  unregisterSpace,
  type Rebuildable,
  type TreeNode,
} from './transaction';
import { MemoryTopologyError, type AccessLength, type AccessSize, type FixedWidthMemory } from './types';
import {
  ADDRESS_LIMIT,
  checkAccessEnd,
  checkAccessLength,
  checkAddress,
  checkLengthValue,
  checkValue,
  MAX_ADDRESS,
} from './validate';
import { sinkOf, type GuestErrorSink } from '../base/guest-error';
import { UnassignedReport } from './unassigned-report';

/**
 * Follows an address space's flat view. After every commit that changes it, a listener hears
 * `begin`, then `regionDel` for each range that went away, then `regionAdd` for each new one (each in
 * ascending address order), then `commit`. Ranges that did not change keep their object identity.
 */
export interface MemoryListener {
  /** A commit starts: the deletions and additions that follow belong to it. */
  begin?(): void;
  /** A flat range that went away (called before any addition of the same commit). */
  regionDel?(s: FlatRange): void;
  /** A new flat range. */
  regionAdd?(s: FlatRange): void;
  /** The commit is complete: the listener now mirrors the new flat view. */
  commit?(): void;
}

/** A guest access that reached no region, or that the region refused. */
export interface UnassignedAccess {
  /** Address in this address space where the refused piece starts (a split access reports each piece). */
  addr: number;
  /** Length of the refused piece in bytes (1 to 8). */
  size: number;
  /** True for a write (dropped), false for a read (answered with all-ones). */
  isWrite: boolean;
  /**
   * `unassigned` (nothing there), `rejected`/`unaligned`/`invalid-size` (the io region's `valid`
   * rules), `readonly`, or `fault` (the ram-device memory threw, e.g. a revoked BAR mapping).
   */
  reason: UnassignedReason;
  /** Name of the region that refused it, if any. */
  region?: string;
  /** With `fault`: what the device memory threw. */
  error?: unknown;
}

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

/** The events of an {@link AddressSpace}. */
export type AddressSpaceEvents = {
  /**
   * An access no region took, or one a region refused (see {@link UnassignedAccess}).
   * @deprecated listen to the sink's `guest-error` ({@link AddressSpace.guestErrors}) instead: the
   *   same report is the `detail` of a `memory` guest error
   */
  unassigned: [UnassignedAccess];
};

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
export class AddressSpace extends EventEmitter<AddressSpaceEvents> implements Rebuildable, Disposable {
  /** The name given at construction, e.g. a PciBus's `pci-memory`; it heads log lines and `info mtree`. */
  readonly name: string;
  /** The region the flat view is rendered from; address 0 of the space is offset 0 of `root`. */
  readonly root: MemoryRegion;
  private _fv: FlatView;
  /** What the last rendering depended on, kept even when the ranges did not change. */
  private _deps: ReadonlySet<MemoryRegion>;
  private _listeners: MemoryListener[] = [];
  private _unassigned = 0;
  private _closed = false;
  /** Where the space reports what the guest's accesses could not do: the machine's sink, or its own. */
  readonly guestErrors: GuestErrorSink;
  // The last ram-device range hit, so that repeated device accesses skip the range lookup. Reset with
  // every new flat view. `_hitWritable` is false for read-only ranges.
  private _hitStart = 0;
  private _hitEnd = 0;
  private _hitDelta = 0;
  private _hitMem: FixedWidthMemory | null = null;
  private _hitWritable = false;

  constructor(name: string, root: MemoryRegion, opts: AddressSpaceOptions = {}) {
    if (typeof name !== 'string')
      throw new ArgTypeError(`address space name must be a string, got ${typeof name}`);
    if (!(root instanceof MemoryRegion))
      throw new ArgTypeError(`root of address space '${name}' must be a MemoryRegion`);
    super();
    this.guestErrors = sinkOf(opts);
    this.name = name;
    this.root = root;
    this._fv = renderFlatView(root);
    this._deps = this._fv._deps;
    registerSpace(this);
  }

  /** The flat view as of the last commit. */
  get flatView(): FlatView {
    return this._fv;
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
   * Reads `size` bytes (1 to 8) at `addr`, little-endian: a `bigint` for 7 and 8 bytes, otherwise a
   * number. An access of 1, 2, 4 or 8 bytes inside one range reaches it whole; one that crosses ranges,
   * or of 3, 5, 6 or 7 bytes, is split per range into naturally aligned pieces no wider than the region
   * accepts, lowest address first, as QEMU's address_space_rw does. The access must end at or below
   * 2^53 (a RangeError otherwise).
   */
  read(addr: number, size: AccessLength): number | bigint {
    // Fast path: the last device range hit again. The hit window lies inside [0, 2^53), so only
    // integrality remains to be checked; anything unusual falls through to the full path.
    if (addr >= this._hitStart && addr + size <= this._hitEnd && Math.floor(addr) === addr) {
      const off = addr + this._hitDelta;
      const m = this._hitMem!;
      try {
        if (size === 4) return m.read32(off);
        if (size === 8) return m.read64(off);
        if (size === 2) return m.read16(off);
        if (size === 1) return m.read8(off);
      } catch (e) {
        return this._fault(e, addr, size, false);
      }
    }
    return this._read(addr, size);
  }

  private _read(addr: number, size: AccessLength): number | bigint {
    if (!(addr >= 0 && addr <= MAX_ADDRESS && Math.floor(addr) === addr)) checkAddress('address', addr);
    if (size !== 4 && size !== 1 && size !== 2 && size !== 8) {
      checkAccessLength(size);
      checkAccessEnd(addr, size);
      return this._readSlow(addr, size);
    }
    if (addr > ADDRESS_LIMIT - size) checkAccessEnd(addr, size);
    const fv = this._fv;
    const starts = fv._starts;
    let i = fv._last;
    if (!(addr >= starts[i] && addr + size <= fv._ends[i])) {
      i = fv._index(addr);
      if (i < 0 || addr + size > fv._ends[i]) return this._readSlow(addr, size);
    }
    const range = fv.ranges[i];
    const r = range.region;
    const off = range.offsetInRegion + (addr - starts[i]);
    if (r._kind === K_RAM_DEVICE) {
      this._remember(range, r._memory!);
      return this._deviceRead(r._memory!, off, addr, size);
    }
    if (r._ops !== null && needsSplit(r, off, size)) return this._readSlow(addr, size);
    return this._readIn(range, off, addr, size);
  }

  /**
   * Writes `value` (a `bigint` iff `size` is 7 or 8) at `addr`, little-endian, split as
   * {@link AddressSpace.read} splits.
   */
  write(addr: number, size: AccessLength, value: number | bigint): void {
    // Fast path, as in read(), with the value checked for its width on the way.
    if (
      this._hitWritable &&
      addr >= this._hitStart &&
      addr + size <= this._hitEnd &&
      Math.floor(addr) === addr
    ) {
      const off = addr + this._hitDelta;
      const m = this._hitMem!;
      try {
        if (size === 4) {
          if (typeof value === 'number' && value >>> 0 === value) return m.write32(off, value);
        } else if (size === 8) {
          if (typeof value === 'bigint' && BigInt.asUintN(64, value) === value) return m.write64(off, value);
        } else if (size === 2) {
          if (typeof value === 'number' && (value & 0xffff) === value) return m.write16(off, value);
        } else if (size === 1) {
          if (typeof value === 'number' && (value & 0xff) === value) return m.write8(off, value);
        }
      } catch (e) {
        this._fault(e, addr, size, true);
        return;
      }
    }
    this._write(addr, size, value);
  }

  private _write(addr: number, size: AccessLength, value: number | bigint): void {
    if (!(addr >= 0 && addr <= MAX_ADDRESS && Math.floor(addr) === addr)) checkAddress('address', addr);
    if (size === 4) {
      if (typeof value !== 'number' || value >>> 0 !== value) checkValue(size, value);
    } else if (size === 1 || size === 2 || size === 8) {
      checkValue(size, value);
    } else {
      checkLengthValue(checkAccessLength(size), value);
      checkAccessEnd(addr, size);
      return this._writeSlow(addr, size, value);
    }
    if (addr > ADDRESS_LIMIT - size) checkAccessEnd(addr, size);
    const fv = this._fv;
    const starts = fv._starts;
    let i = fv._last;
    if (!(addr >= starts[i] && addr + size <= fv._ends[i])) {
      i = fv._index(addr);
      if (i < 0 || addr + size > fv._ends[i]) return this._writeSlow(addr, size, value);
    }
    const range = fv.ranges[i];
    const r = range.region;
    const off = range.offsetInRegion + (addr - starts[i]);
    if (r._kind === K_RAM_DEVICE) this._remember(range, r._memory!);
    if (r._kind === K_RAM_DEVICE && !range.readonly) {
      this._deviceWrite(r._memory!, off, addr, size, value);
      return;
    }
    if (r._ops !== null && needsSplit(r, off, size)) return this._writeSlow(addr, size, value);
    this._writeIn(range, off, addr, size, value);
  }

  /** An 8-byte read delivered as two 32-bit halves: `out[0]` low, `out[1]` high. */
  read64Pair(addr: number, out: Uint32Array): void {
    if (!(out instanceof Uint32Array) || out.length < 2) {
      throw new ArgTypeError('read64Pair needs a Uint32Array of at least 2 elements');
    }
    checkAddress('address', addr);
    checkAccessEnd(addr, 8);
    const fv = this._fv;
    const i = fv._index(addr);
    if (i >= 0 && addr + 8 <= fv._ends[i]) {
      const range = fv.ranges[i];
      const r = range.region;
      const off = range.offsetInRegion + (addr - fv._starts[i]);
      if (r._kind === K_RAM_DEVICE && r._memory!.read64Pair !== undefined) {
        try {
          r._memory!.read64Pair(off, out);
        } catch (e) {
          this._fault(e, addr, 8, false);
          out[0] = 0xffffffff;
          out[1] = 0xffffffff;
        }
        return;
      }
      if (r._kind === K_RAM) {
        const dv = r._dv ?? r._ramView();
        out[0] = dv.getUint32(off, true);
        out[1] = dv.getUint32(off + 4, true);
        return;
      }
    }
    const v = this.read(addr, 8) as bigint;
    out[0] = Number(v & 0xffffffffn);
    out[1] = Number(v >> 32n);
  }

  /** An 8-byte write given as two 32-bit halves. */
  write64Pair(addr: number, lo: number, hi: number): void {
    checkAddress('address', addr);
    checkAccessEnd(addr, 8);
    checkValue(4, lo);
    checkValue(4, hi);
    const fv = this._fv;
    const i = fv._index(addr);
    if (i >= 0 && addr + 8 <= fv._ends[i]) {
      const range = fv.ranges[i];
      const r = range.region;
      const off = range.offsetInRegion + (addr - fv._starts[i]);
      if (!range.readonly && r._kind === K_RAM_DEVICE && r._memory!.write64Pair !== undefined) {
        try {
          r._memory!.write64Pair(off, lo, hi);
        } catch (e) {
          this._fault(e, addr, 8, true);
        }
        return;
      }
      if (!range.readonly && r._kind === K_RAM) {
        const dv = r._dv ?? r._ramView();
        dv.setUint32(off, lo, true);
        dv.setUint32(off + 4, hi, true);
        return;
      }
    }
    this.write(addr, 8, (BigInt(hi) << 32n) | BigInt(lo));
  }

  /**
   * Subscribes a listener. It first hears `regionAdd` for every range already present (between
   * `begin` and `commit`), then every later change. The returned function unsubscribes it, after
   * telling it `regionDel` for every range still present.
   */
  addMemoryListener(l: MemoryListener): () => void {
    this._assertOpen();
    if (l === null || typeof l !== 'object') throw new ArgTypeError('listener must be an object');
    this._listeners.push(l);
    const ranges = this._fv.ranges;
    l.begin?.();
    for (const r of ranges) l.regionAdd?.(r);
    l.commit?.();
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      const i = this._listeners.indexOf(l);
      if (i < 0) return;
      this._listeners.splice(i, 1);
      const now = this._fv.ranges;
      l.begin?.();
      for (const r of now) l.regionDel?.(r);
      l.commit?.();
    };
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
    this._listeners = [];
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
    for (const r of this._deps) if (changed.has(r)) return true;
    return false;
  }

  /** @internal Called by the outermost commit. */
  _rebuild(errors: unknown[]): void {
    const next = renderFlatView(this.root, this._fv);
    this._deps = next._deps;
    this._install(next, errors);
  }

  /** One load of exactly `size` bytes from device memory; a fault reads as all-ones and is reported. */
  private _deviceRead(m: FixedWidthMemory, off: number, addr: number, size: AccessSize): number | bigint {
    try {
      return size === 4
        ? m.read32(off)
        : size === 8
          ? m.read64(off)
          : size === 2
            ? m.read16(off)
            : m.read8(off);
    } catch (e) {
      return this._fault(e, addr, size, false);
    }
  }

  /** One store of exactly `size` bytes to device memory; a fault drops it and is reported. */
  private _deviceWrite(
    m: FixedWidthMemory,
    off: number,
    addr: number,
    size: AccessSize,
    value: number | bigint,
  ): void {
    try {
      if (size === 4) m.write32(off, value as number);
      else if (size === 8) m.write64(off, value as bigint);
      else if (size === 2) m.write16(off, value as number);
      else m.write8(off, value as number);
    } catch (e) {
      this._fault(e, addr, size, true);
    }
  }

  /**
   * A ram-device access that threw: the device memory faulted (vfio-pci revokes a BAR's mapping while
   * the device is reset or in a low-power state, and the access throws VfioError 'SIGBUS'). A guest
   * can cause that, so it must not throw at the VMM: it reads as all-ones, a write is dropped, and the
   * error is reported with the access.
   */
  private _fault(error: unknown, addr: number, size: number, isWrite: boolean): number | bigint {
    const i = this._fv._index(addr);
    this._report(addr, size, isWrite, 'fault', i >= 0 ? this._fv.ranges[i].region : undefined, error);
    return ones(size);
  }

  private _remember(range: FlatRange, m: FixedWidthMemory): void {
    this._hitStart = range.addr;
    this._hitEnd = range.addr + range.size;
    this._hitDelta = range.offsetInRegion - range.addr;
    this._hitMem = m;
    this._hitWritable = !range.readonly;
  }

  private _forget(): void {
    this._hitStart = 0;
    this._hitEnd = 0;
    this._hitMem = null;
    this._hitWritable = false;
  }

  private _install(next: FlatView, errors: unknown[]): void {
    const prev = this._fv;
    const oldSet = new Set(prev.ranges);
    const newSet = new Set(next.ranges);
    const dels = prev.ranges.filter((r) => !newSet.has(r));
    const adds = next.ranges.filter((r) => !oldSet.has(r));
    if (dels.length === 0 && adds.length === 0) return;
    this._fv = next;
    this._forget();
    const ls = this._listeners.slice();
    const call = (fn: () => void): void => {
      try {
        fn();
      } catch (e) {
        errors.push(e);
      }
    };
    for (const l of ls) if (l.begin) call(() => l.begin!());
    // Removals go to the most recently added listener first, additions to the oldest first, as QEMU
    // orders them, so that stacked listeners unwind in reverse.
    for (const r of dels) {
      for (let k = ls.length - 1; k >= 0; k--) {
        const l = ls[k];
        if (l.regionDel) call(() => l.regionDel!(r));
      }
    }
    for (const r of adds) for (const l of ls) if (l.regionAdd) call(() => l.regionAdd!(r));
    for (const l of ls) if (l.commit) call(() => l.commit!());
  }

  private _assertOpen(): void {
    if (this._closed) throw new MemoryTopologyError('closed', `address space '${this.name}' is closed`);
  }

  /** One access that lies entirely inside `range`. */
  private _readIn(range: FlatRange, off: number, addr: number, size: AccessSize): number | bigint {
    const r = range.region;
    const k = r._kind;
    if (k === K_RAM) {
      const dv = r._dv ?? r._ramView();
      return size === 4
        ? dv.getUint32(off, true)
        : size === 8
          ? dv.getBigUint64(off, true)
          : size === 2
            ? dv.getUint16(off, true)
            : dv.getUint8(off);
    }
    if (k === K_RAM_DEVICE) return this._deviceRead(r._memory!, off, addr, size);
    const why = ioInvalidReason(r, off, size, false);
    if (why !== null) {
      this._report(addr, size, false, why, r);
      return ones(size);
    }
    return ioRead(r, off, size);
  }

  private _writeIn(
    range: FlatRange,
    off: number,
    addr: number,
    size: AccessSize,
    value: number | bigint,
  ): void {
    const r = range.region;
    if (range.readonly) {
      this._report(addr, size, true, 'readonly', r);
      return;
    }
    const k = r._kind;
    if (k === K_RAM) {
      const dv = r._dv ?? r._ramView();
      if (size === 4) dv.setUint32(off, value as number, true);
      else if (size === 8) dv.setBigUint64(off, value as bigint, true);
      else if (size === 2) dv.setUint16(off, value as number, true);
      else dv.setUint8(off, value as number);
      return;
    }
    if (k === K_RAM_DEVICE) {
      this._deviceWrite(r._memory!, off, addr, size, value);
      return;
    }
    const why = ioInvalidReason(r, off, size, true);
    if (why !== null) {
      this._report(addr, size, true, why, r);
      return;
    }
    ioWrite(r, off, size, value);
  }

  /** Access that crosses a range boundary or touches unassigned space. */
  private _readSlow(addr: number, size: AccessLength): number | bigint {
    this._assertOpen();
    let v = 0n;
    this._walk(addr, size, (at, n, range) => {
      let piece: bigint;
      if (range === null) {
        this._report(at, n, false, 'unassigned');
        piece = (1n << BigInt(n * 8)) - 1n;
      } else {
        const got = this._readIn(range, range.offsetInRegion + (at - range.addr), at, n as AccessSize);
        // Each piece is held to its own width before it is combined: a memory that hands back more
        // than it was asked for must not spill into its neighbours.
        piece = BigInt.asUintN(n * 8, BigInt(got));
      }
      v |= piece << BigInt((at - addr) * 8);
    });
    return size >= 7 ? v : Number(v);
  }

  private _writeSlow(addr: number, size: AccessLength, value: number | bigint): void {
    this._assertOpen();
    const v = BigInt(value);
    this._walk(addr, size, (at, n, range) => {
      if (range === null) {
        this._report(at, n, true, 'unassigned');
        return;
      }
      const piece = BigInt.asUintN(n * 8, v >> BigInt((at - addr) * 8));
      this._writeIn(
        range,
        range.offsetInRegion + (at - range.addr),
        at,
        n as AccessSize,
        n === 8 ? piece : Number(piece),
      );
    });
  }

  /**
   * Splits [addr, addr+size) at range boundaries. Each unassigned gap is one call with a null range;
   * each assigned part is cut into the largest pieces the region accepts that are naturally aligned
   * in the region, lowest address first.
   */
  private _walk(
    addr: number,
    size: number,
    fn: (at: number, n: number, range: FlatRange | null) => void,
  ): void {
    const fv = this._fv;
    const end = addr + size;
    let at = addr;
    while (at < end) {
      const i = fv._index(at);
      if (i < 0) {
        // Unassigned up to the next range or the end of the access.
        const next = fv._nextStart(at);
        const stop = next < end ? next : end;
        fn(at, stop - at, null);
        at = stop;
        continue;
      }
      const range = fv.ranges[i];
      const stop = Math.min(end, fv._ends[i]);
      const widest = widestPiece(range.region);
      // Alignment is the region's, as QEMU's memory_access_size takes it from the offset in the region.
      const delta = range.offsetInRegion - range.addr;
      while (at < stop) {
        const n = pieceSize(at + delta, stop - at, widest);
        fn(at, n, range);
        at += n;
      }
    }
  }

  private _report(
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
 * `backings` (directly or through an alias). An owner asks this before it frees such memory: a
 * range the flat view still holds is what guest accesses, the DMA listener and KVM slots use.
 * @internal
 */
export function ramShownBy(backings: ReadonlySet<ArrayBuffer | SharedArrayBuffer>): RamInUse[] {
  const out: RamInUse[] = [];
  for (const s of registeredSpaces()) {
    if (!(s instanceof AddressSpace)) continue;
    const seen = new Set<MemoryRegion>();
    for (const r of s.flatView.ranges) {
      const b = r.region._backing;
      if (r.kind !== 'ram' || b === null || !backings.has(b) || seen.has(r.region)) continue;
      seen.add(r.region);
      out.push({ space: s.name, region: r.region.name });
    }
  }
  return out;
}
