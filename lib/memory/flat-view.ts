/**
 * The flat view: what an address space looks like after priorities, holes, clipping and aliases are
 * resolved, as a sorted list of disjoint ranges with O(log n) lookup, and the pieces a guest access
 * is cut into along them. flat-view-render.ts renders it from a region tree.
 */
import type { MemoryRegion } from './region';
import type { TreeNode } from './transaction';
import type { AccessSize } from './types';
import { checkAddress } from './validate';

/** One piece of an address space that a single region serves, as QEMU's FlatRange / section. */
export interface FlatRange {
  /** Absolute start address. */
  readonly addr: number;
  /** Length in bytes (never 0). */
  readonly size: number;
  /** The terminal region that serves the range (aliases resolved). */
  readonly region: MemoryRegion;
  /** Where `addr` falls inside `region`. */
  readonly offsetInRegion: number;
  /** How accesses are served: guest RAM, a device mapping (`ram-device`) or the `io` callbacks. */
  readonly kind: 'ram' | 'ram-device' | 'io';
  /** True if the region or anything above it on the path (alias, container) is read-only. */
  readonly readonly: boolean;
}

/** Most radix buckets per range: two keep nearly every bucket to zero or one range. */
const BUCKETS_PER_RANGE = 2;

/**
 * An immutable snapshot of an address space. `ranges` is sorted by address. Lookup goes through a
 * radix table over the covered span, as QEMU's physical page map does, but sized to the ranges: the
 * address's bucket names the few ranges that can hold it (usually one), and only those are searched.
 * A plain binary search costs a hard-to-predict branch per level; this costs about one.
 */
export class FlatView {
  /** Disjoint ranges in ascending address order. */
  readonly ranges: readonly FlatRange[];
  /** The region the view was rendered from (null when empty). */
  readonly root: MemoryRegion | null;
  /** Start and end (exclusive) of each range. */
  private readonly _starts: Float64Array;
  private readonly _ends: Float64Array;
  /** Index of the last range found, tried first on the next lookup. */
  private _last = 0;
  /** The root and every alias target the rendering walked through. */
  private readonly _deps: ReadonlySet<TreeNode>;
  /** Start of bucket 0 (the first range's start) and the end of the last range. */
  private readonly _lo: number;
  private readonly _hi: number;
  /** Buckets per byte: 1 / bucket size, a power of two, so the product is exact. */
  private readonly _perByte: number;
  /** For bucket b, the first range ending above the bucket's start; one extra at the end. */
  private readonly _bucket: Int32Array;

  /** @internal */
  constructor(
    ranges: readonly FlatRange[],
    root: MemoryRegion | null,
    deps: ReadonlySet<TreeNode> = new Set(),
  ) {
    this.ranges = Object.freeze(ranges);
    this.root = root;
    this._deps = deps;
    const n = ranges.length;
    this._starts = new Float64Array(n);
    this._ends = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      this._starts[i] = ranges[i].addr;
      this._ends[i] = ranges[i].addr + ranges[i].size;
    }
    this._lo = n > 0 ? this._starts[0] : 0;
    this._hi = n > 0 ? this._ends[n - 1] : 0;
    // The smallest power-of-two bucket size that needs at most BUCKETS_PER_RANGE buckets per range.
    const span = this._hi - this._lo;
    let size = 1;
    while (span / size > BUCKETS_PER_RANGE * n) size *= 2;
    const count = Math.ceil(span / size);
    this._perByte = 1 / size;
    const bucket = new Int32Array(count + 1);
    let i = 0;
    for (let b = 0; b <= count; b++) {
      const at = this._lo + b * size;
      while (i < n && this._ends[i] <= at) i++;
      bucket[b] = i;
    }
    this._bucket = bucket;
  }

  /** The range containing `addr`, or undefined if it is unassigned. */
  lookup(addr: number): FlatRange | undefined {
    checkAddress('address', addr);
    const i = this._index(addr);
    return i < 0 ? undefined : this.ranges[i];
  }

  /**
   * @internal The range containing `addr`, or undefined: {@link FlatView.lookup} for guest accesses,
   * whose callers checked `addr` already. The range found last is tried first, as guest accesses
   * tend to come back to it; lookups of scattered addresses skip that try.
   */
  rangeAt(addr: number): FlatRange | undefined {
    const i = this._last;
    if (addr >= this._starts[i] && addr < this._ends[i]) return this.ranges[i];
    const j = this._index(addr);
    return j < 0 ? undefined : this.ranges[j];
  }

  /** @internal Start of the first range after `addr`, or Infinity. */
  nextStart(addr: number): number {
    const starts = this._starts;
    let lo = 0;
    let hi = starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid] <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo < starts.length ? starts[lo] : Infinity;
  }

  /**
   * @internal Whether the rendering walked through any of `changed` (its root or an alias target):
   * a change anywhere else cannot alter what it shows.
   */
  dependsOn(changed: ReadonlySet<TreeNode>): boolean {
    for (const r of this._deps) if (changed.has(r)) return true;
    return false;
  }

  /**
   * @internal Cuts [addr, addr + size) as QEMU's address_space_rw does: each unassigned gap is one
   * call with a null range, and each assigned part is cut into the largest naturally aligned pieces
   * (aligned in the region, as memory_access_size takes them) that its region accepts, lowest address
   * first.
   */
  pieces(addr: number, size: number, fn: (at: number, n: number, range: FlatRange | null) => void): void {
    const end = addr + size;
    let at = addr;
    while (at < end) {
      const range = this.rangeAt(at);
      if (range === undefined) {
        // Unassigned up to the next range or the end of the access.
        const next = this.nextStart(at);
        const stop = next < end ? next : end;
        fn(at, stop - at, null);
        at = stop;
        continue;
      }
      const rangeEnd = range.addr + range.size;
      const stop = end < rangeEnd ? end : rangeEnd;
      const io = range.region.io;
      const widest = io !== null ? io.widest : 8;
      const delta = range.offsetInRegion - range.addr;
      while (at < stop) {
        const n = pieceSize(at + delta, stop - at, widest);
        fn(at, n, range);
        at += n;
      }
    }
  }

  /** Index of the range containing `addr`, or -1, through the radix table. */
  private _index(addr: number): number {
    if (!(addr >= this._lo && addr < this._hi)) return -1;
    const b = Math.floor((addr - this._lo) * this._perByte);
    // The range holding addr ends above the bucket's start and starts before the next bucket's, so
    // it lies between the two entries (inclusive); mostly they are equal or adjacent.
    let lo = this._bucket[b];
    let hi = this._bucket[b + 1];
    const starts = this._starts;
    if (hi >= starts.length) hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (starts[mid] <= addr) lo = mid;
      else hi = mid - 1;
    }
    if (addr < starts[lo] || addr >= this._ends[lo]) return -1;
    this._last = lo;
    return lo;
  }
}

/**
 * Largest power of two up to `max` (what the region accepts) that fits in `remaining` bytes and
 * divides `at`, as QEMU's memory_access_size picks each piece of address_space_rw.
 */
export function pieceSize(at: number, remaining: number, max: number = 8): AccessSize {
  if (max >= 8 && remaining >= 8 && at % 8 === 0) return 8;
  if (max >= 4 && remaining >= 4 && at % 4 === 0) return 4;
  if (max >= 2 && remaining >= 2 && at % 2 === 0) return 2;
  return 1;
}
