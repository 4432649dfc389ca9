/**
 * Memory listeners and what a commit tells them: the ranges that went away and the new ones, in
 * QEMU's order, with a failing listener kept from stopping the others.
 */
import { ArgTypeError } from '../base/error';
import type { FlatRange, FlatView } from './flat-view';

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

/** What changed between two flat views: ranges gone and ranges new, each in ascending address order. */
export interface FlatViewChange {
  readonly dels: readonly FlatRange[];
  readonly adds: readonly FlatRange[];
}

/**
 * flatViewChange: the ranges of `prev` not in `next` and those of `next` not in `prev`, told apart by
 * identity (the renderer reuses unchanged ranges); null when the two show the same.
 */
export function flatViewChange(prev: FlatView, next: FlatView): FlatViewChange | null {
  const oldSet = new Set(prev.ranges);
  const newSet = new Set(next.ranges);
  const dels = prev.ranges.filter((r) => !newSet.has(r));
  const adds = next.ranges.filter((r) => !oldSet.has(r));
  return dels.length === 0 && adds.length === 0 ? null : { dels, adds };
}

/** The listeners of one address space, oldest first. */
export class MemoryListeners {
  private _list: MemoryListener[] = [];

  /**
   * Subscribes `l`, telling it `regionAdd` for each of `ranges` (what is there now) between `begin`
   * and `commit`. The returned function unsubscribes it, after telling it `regionDel` for each range
   * `current()` then gives; calling it again does nothing.
   */
  add(l: MemoryListener, ranges: readonly FlatRange[], current: () => readonly FlatRange[]): () => void {
    if (l === null || typeof l !== 'object') throw new ArgTypeError('listener must be an object');
    this._list.push(l);
    l.begin?.();
    for (const r of ranges) l.regionAdd?.(r);
    l.commit?.();
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      const i = this._list.indexOf(l);
      if (i < 0) return;
      this._list.splice(i, 1);
      const now = current();
      l.begin?.();
      for (const r of now) l.regionDel?.(r);
      l.commit?.();
    };
  }

  /** Forgets every listener without telling them anything. */
  clear(): void {
    this._list = [];
  }

  /**
   * Tells every listener `change`. A listener that throws does not stop the others: its error is
   * pushed onto `errors`.
   */
  notify(change: FlatViewChange, errors: unknown[]): void {
    const ls = this._list.slice();
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
    for (const r of change.dels) {
      for (let k = ls.length - 1; k >= 0; k--) {
        const l = ls[k];
        if (l.regionDel) call(() => l.regionDel!(r));
      }
    }
    for (const r of change.adds) for (const l of ls) if (l.regionAdd) call(() => l.regionAdd!(r));
    for (const l of ls) if (l.commit) call(() => l.commit!());
  }
}
