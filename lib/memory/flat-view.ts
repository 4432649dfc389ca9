/**
 * The flat view: what an address space looks like after priorities, holes, clipping and aliases are
 * resolved, as a sorted list of disjoint ranges with O(log n) lookup.
 */
import { K_ALIAS, K_CONTAINER, K_RAM, K_RAM_DEVICE, type MemoryRegion } from './region';
import { checkAddress, MAX_ADDRESS } from './validate';

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

function kindName(k: number): FlatRange['kind'] {
  return k === K_RAM ? 'ram' : k === K_RAM_DEVICE ? 'ram-device' : 'io';
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
  /** @internal Start and end (exclusive) of each range. */
  readonly _starts: Float64Array;
  /** @internal */
  readonly _ends: Float64Array;
  /** @internal Index of the last range found, tried first on the next lookup. */
  _last = 0;
  /** @internal The root and every alias target the rendering walked through. */
  readonly _deps: ReadonlySet<MemoryRegion>;
  /** @internal Start of bucket 0 (the first range's start) and the end of the last range. */
  private readonly _lo: number;
  private readonly _hi: number;
  /** @internal Buckets per byte: 1 / bucket size, a power of two, so the product is exact. */
  private readonly _perByte: number;
  /** @internal For bucket b, the first range ending above the bucket's start; one extra at the end. */
  private readonly _bucket: Int32Array;

  /** @internal */
  constructor(
    ranges: readonly FlatRange[],
    root: MemoryRegion | null,
    deps: ReadonlySet<MemoryRegion> = new Set(),
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

  /** @internal Start of the first range after `addr`, or Infinity. */
  _nextStart(addr: number): number {
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

  /** @internal Index of the range containing `addr`, or -1. */
  _index(addr: number): number {
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

/** Builds one FlatRange object; a class keeps every range the same hidden class. */
class Range implements FlatRange {
  constructor(
    readonly addr: number,
    readonly size: number,
    readonly region: MemoryRegion,
    readonly offsetInRegion: number,
    readonly kind: FlatRange['kind'],
    readonly readonly: boolean,
  ) {}
}

/** Whether two ranges describe the same mapping (QEMU's flatrange_equal). */
export function sameRange(a: FlatRange, b: FlatRange): boolean {
  return (
    a.addr === b.addr &&
    a.size === b.size &&
    a.region === b.region &&
    a.offsetInRegion === b.offsetInRegion &&
    a.readonly === b.readonly
  );
}

/** Pieces found while walking the tree, in render order: earlier ones take precedence. */
class Pieces {
  start: number[] = [];
  end: number[] = [];
  region: MemoryRegion[] = [];
  /** Absolute address of the region's offset 0, so offsetInRegion = addr - base. */
  base: number[] = [];
  ro: boolean[] = [];
  /** The root and the alias targets visited: changes under anything else cannot matter. */
  deps = new Set<MemoryRegion>();
}

/**
 * Whether a ram region's backing no longer holds it: its ArrayBuffer was detached (its owner, e.g.
 * GuestRam, closed it) or a resizable one shrank. Such a region shows nothing of its own, as a
 * container does, so the guest meets unassigned space (all-ones, reported) instead of a TypeError
 * thrown at the VMM, and no listener maps memory that is gone.
 */
function backingGone(mr: MemoryRegion): boolean {
  return mr._kind === K_RAM && mr._backing !== null && mr._backing.byteLength < mr._size;
}

/**
 * Walks the tree as QEMU's render_memory_region does: subregions in priority order, then the region
 * itself. Each terminal region contributes its clipped extent as a piece; a piece is visible wherever
 * no earlier piece covers it, which is exactly QEMU's "fill only the holes" rule.
 */
function collect(
  mr: MemoryRegion,
  base: number,
  clipStart: number,
  clipEnd: number,
  ro: boolean,
  out: Pieces,
): void {
  if (!mr._enabled) return;
  base += mr._offset;
  if (mr._readonly) ro = true;
  const s = base > clipStart ? base : clipStart;
  const regionEnd = base + mr._size;
  const e = regionEnd < clipEnd ? regionEnd : clipEnd;
  if (s >= e) return;
  if (mr._kind === K_ALIAS) {
    const t = mr._target!;
    out.deps.add(t);
    // The target's own placement is cancelled: an alias shows contents, not position.
    collect(t, base - t._offset - mr._aliasOffset, s, e, ro, out);
    return;
  }
  const kids = mr._children.length === 0 ? mr._children : mr._sortedChildren();
  for (let i = 0; i < kids.length; i++) collect(kids[i], base, s, e, ro, out);
  if (mr._kind !== K_CONTAINER && !backingGone(mr)) {
    out.start.push(s);
    out.end.push(e);
    out.region.push(mr);
    out.base.push(base);
    out.ro.push(ro);
  }
}

/** Min-heap of piece indices; the index is the precedence (lower renders first, so wins). */
class IndexHeap {
  private a: number[] = [];
  get size(): number {
    return this.a.length;
  }
  top(): number {
    return this.a[0];
  }
  push(v: number): void {
    const a = this.a;
    let i = a.length;
    a.push(v);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] <= v) break;
      a[i] = a[p];
      i = p;
    }
    a[i] = v;
  }
  pop(): void {
    const a = this.a;
    const last = a.pop()!;
    const n = a.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && a[c + 1] < a[c]) c++;
      if (a[c] >= last) break;
      a[i] = a[c];
      i = c;
    }
    a[i] = last;
  }
}

/**
 * Renders `root` into a flat view. Instead of QEMU's repeated insertion into an array (quadratic in
 * the worst case) the pieces are swept once in address order with a heap keyed by render order, which
 * gives the same first-rendered-wins result in O(n log n).
 */
export function renderFlatView(root: MemoryRegion | null, prev?: FlatView): FlatView {
  if (root === null) return new FlatView([], null);
  const p = new Pieces();
  p.deps.add(root);
  // Clipping at 2^53 keeps every range end an exact integer.
  collect(root, 0, 0, MAX_ADDRESS + 1, false, p);
  const n = p.start.length;
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const start = p.start;
  order.sort((a, b) => start[a] - start[b]);

  const ranges: FlatRange[] = [];
  const heap = new IndexHeap();
  let next = 0;
  let cur = 0;
  // The range being grown, merged while the same region continues contiguously.
  let runStart = 0;
  let runEnd = -1;
  let runPiece = -1;
  const flush = (): void => {
    if (runPiece < 0) return;
    const r = p.region[runPiece];
    ranges.push(
      new Range(
        runStart,
        runEnd - runStart,
        r,
        runStart - p.base[runPiece],
        kindName(r._kind),
        p.ro[runPiece],
      ),
    );
    runPiece = -1;
  };
  while (next < n || heap.size > 0) {
    if (heap.size === 0) cur = start[order[next]];
    while (next < n && start[order[next]] <= cur) heap.push(order[next++]);
    while (heap.size > 0 && p.end[heap.top()] <= cur) heap.pop();
    if (heap.size === 0) continue;
    const top = heap.top();
    let stop = p.end[top];
    if (next < n && start[order[next]] < stop) stop = start[order[next]];
    if (
      runPiece >= 0 &&
      runEnd === cur &&
      p.region[runPiece] === p.region[top] &&
      p.base[runPiece] === p.base[top] &&
      p.ro[runPiece] === p.ro[top]
    ) {
      runEnd = stop;
    } else {
      flush();
      runStart = cur;
      runEnd = stop;
      runPiece = top;
    }
    cur = stop;
  }
  flush();
  if (prev !== undefined) reuseUnchanged(ranges, prev.ranges);
  return new FlatView(ranges, root, p.deps);
}

/**
 * Replaces each new range equal to an old one with the old object, so that listeners and callers can
 * tell unchanged ranges by identity.
 */
function reuseUnchanged(next: FlatRange[], old: readonly FlatRange[]): void {
  let i = 0;
  for (let j = 0; j < next.length; j++) {
    const n = next[j];
    while (i < old.length && old[i].addr < n.addr) i++;
    if (i < old.length && sameRange(old[i], n)) next[j] = old[i];
  }
}
