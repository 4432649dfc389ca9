/**
 * Rendering a region tree into a flat view, as QEMU's generate_memory_topology does: priorities,
 * holes, clipping and aliases resolved into sorted disjoint ranges, with unchanged ranges keeping
 * their identity from one rendering to the next.
 */
import { FlatView, type FlatRange } from './flat-view';
import type { MemoryRegion } from './region';
import { K_ALIAS, K_CONTAINER, K_RAM, K_RAM_DEVICE } from './types';
import type { TreeNode } from './transaction';
import { MAX_ADDRESS } from './validate';

function kindName(k: number): FlatRange['kind'] {
  return k === K_RAM ? 'ram' : k === K_RAM_DEVICE ? 'ram-device' : 'io';
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
  deps = new Set<TreeNode>();
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
  if (!mr.enabled) return;
  base += mr.offset;
  if (mr.readonly) ro = true;
  const s = base > clipStart ? base : clipStart;
  const regionEnd = base + mr.size;
  const e = regionEnd < clipEnd ? regionEnd : clipEnd;
  if (s >= e) return;
  const kind = mr.kindCode;
  if (kind === K_ALIAS) {
    const t = mr.aliasTarget!;
    out.deps.add(t);
    // The target's own placement is cancelled: an alias shows contents, not position.
    collect(t, base - t.offset - mr.aliasOffset, s, e, ro, out);
    return;
  }
  const kids = mr.subregions;
  for (let i = 0; i < kids.length; i++) collect(kids[i], base, s, e, ro, out);
  // A ram region whose backing is gone (GuestRam closed it) shows nothing of its own, as a container
  // does, so the guest meets unassigned space (all-ones, reported) instead of a TypeError thrown at
  // the VMM, and no listener maps memory that is gone.
  if (kind !== K_CONTAINER && !mr.backingLost) {
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
        kindName(r.kindCode),
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
