/**
 * A deliberately naive model of the memory.rst visibility rules, used as the oracle of the property
 * tests: it resolves one byte at a time by walking the tree from the root, trying siblings in
 * descending priority order (newest first among equals) and descending into containers and aliases.
 * It shares no code with the renderer.
 */
import { MemoryRegion } from '../../../lib';

export interface Hit {
  region: MemoryRegion;
  offset: number;
  readonly: boolean;
}

export class Reference {
  /** Order in which each region was last added to a parent, kept by the test, not by the model. */
  readonly added = new Map<MemoryRegion, number>();
  private counter = 0;

  noteAdded(r: MemoryRegion): void {
    this.added.set(r, ++this.counter);
  }

  private siblings(mr: MemoryRegion): MemoryRegion[] {
    return [...mr.subregions].sort(
      (a, b) => b.priority - a.priority || this.added.get(b)! - this.added.get(a)!,
    );
  }

  private within(mr: MemoryRegion, rel: number, ro: boolean): Hit | null {
    ro = ro || mr.readonly;
    if (mr.kind === 'alias') {
      const t = mr.aliasTarget!;
      const inTarget = rel + mr.aliasOffset;
      if (!t.enabled || inTarget >= t.size) return null;
      return this.within(t, inTarget, ro);
    }
    for (const c of this.siblings(mr)) {
      if (!c.enabled) continue;
      const cr = rel - c.offset;
      if (cr < 0 || cr >= c.size) continue;
      const hit = this.within(c, cr, ro);
      if (hit !== null) return hit;
    }
    return mr.kind === 'container' ? null : { region: mr, offset: rel, readonly: ro };
  }

  /** What the guest reaches at `addr` in the address space rooted at `root`. */
  resolve(root: MemoryRegion, addr: number): Hit | null {
    // As in QEMU, the root's own offset (if it is also placed somewhere) shifts the space.
    const rel = addr - root.offset;
    if (!root.enabled || rel < 0 || rel >= root.size) return null;
    return this.within(root, rel, false);
  }

  /** The flat view, built byte by byte and merged where region, offset and read-only continue. */
  flatten(
    root: MemoryRegion,
    domain: number,
  ): Array<{ addr: number; size: number; region: MemoryRegion; offsetInRegion: number; readonly: boolean }> {
    const out: Array<{
      addr: number;
      size: number;
      region: MemoryRegion;
      offsetInRegion: number;
      readonly: boolean;
    }> = [];
    for (let a = 0; a < domain; a++) {
      const h = this.resolve(root, a);
      if (h === null) continue;
      const last = out[out.length - 1];
      if (
        last !== undefined &&
        last.addr + last.size === a &&
        last.region === h.region &&
        last.readonly === h.readonly &&
        last.offsetInRegion + last.size === h.offset
      ) {
        last.size++;
      } else {
        out.push({ addr: a, size: 1, region: h.region, offsetInRegion: h.offset, readonly: h.readonly });
      }
    }
    return out;
  }

  /** Whether `to` can be reached from `from` through subregions and alias targets. */
  static reaches(from: MemoryRegion, to: MemoryRegion): boolean {
    if (from === to) return true;
    if (from.aliasTarget !== null && Reference.reaches(from.aliasTarget, to)) return true;
    return from.subregions.some((c) => Reference.reaches(c, to));
  }
}
