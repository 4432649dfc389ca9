/**
 * `info mtree` and `info mtree -f` in QEMU's line formats, so that an operator can read the output the
 * way they read QEMU's and diff the two; plus the same information as JSON.
 */
import { ArgTypeError } from '../base/error';
import { AddressSpace } from './address-space';
import type { FlatRange } from './flat-view';
import { renderFlatView } from './flat-view-render';
import { MemoryRegion } from './region';
import { K_ALIAS, K_CONTAINER, K_RAM, K_RAM_DEVICE } from './types';
import { hex16 } from './validate';

/** Options of {@link renderMtree}. */
export interface MtreeOptions {
  /** Print the flat views (`info mtree -f`) instead of the region trees. */
  flat?: boolean;
  /** Also print disabled regions, marked `[disabled]` (`info mtree -D`). Tree form only. */
  disabled?: boolean;
  /** Text appended (after a space) to a flat range's line, e.g. how the range is mapped. */
  annotate?(r: FlatRange): string | undefined;
}

/** The type word QEMU prints in parentheses: ram, rom, ramd, i/o or container. */
export function mtreeType(mr: MemoryRegion): string {
  while (mr.kindCode === K_ALIAS) mr = mr.aliasTarget!;
  if (mr.kindCode === K_RAM_DEVICE) return 'ramd';
  if (mr.kindCode === K_RAM) return mr.readonly ? 'rom' : 'ram';
  // QEMU calls any region without a parent a container and any other non-RAM region i/o.
  return mr.parent === null ? 'container' : 'i/o';
}

/** Last address of a region or range, as QEMU prints it (the start itself for size 0). */
function lastOf(start: number, size: number): number {
  return size === 0 ? start : start + size - 1;
}

/** Subregions in QEMU's print order: by address, then higher priority first, else list order. */
function printOrder(mr: MemoryRegion): MemoryRegion[] {
  // Array.prototype.sort is stable, so ties keep the priority-list order as QEMU's insertion does.
  return mr.subregions.slice().sort((a, b) => a.offset - b.offset || b.priority - a.priority);
}

function printRegion(
  out: string[],
  mr: MemoryRegion,
  level: number,
  base: number,
  aliasQueue: MemoryRegion[],
  showDisabled: boolean,
): void {
  const start = base + mr.offset;
  const end = lastOf(start, mr.size);
  const visible = mr.enabled || showDisabled;
  const head = `${'  '.repeat(level)}${hex16(start)}-${hex16(end)} (prio ${mr.priority}, ${mtreeType(mr)}): `;
  const tail = mr.enabled ? '' : ' [disabled]';
  if (mr.kindCode === K_ALIAS) {
    const t = mr.aliasTarget!;
    if (!aliasQueue.includes(t)) aliasQueue.push(t);
    if (visible) {
      const a = mr.aliasOffset;
      out.push(`${head}alias ${mr.name} @${t.name} ${hex16(a)}-${hex16(lastOf(a, mr.size))}${tail}`);
    }
  } else if (visible) {
    out.push(`${head}${mr.name}${tail}`);
  }
  // As in QEMU, the subregions of a hidden disabled region are still listed.
  for (const c of printOrder(mr)) printRegion(out, c, level + 1, start, aliasQueue, showDisabled);
}

/**
 * QEMU's memory_region_get_flatview_root: the region a flat view is named after, skipping aliases
 * and single-child containers that show their target whole.
 */
function flatViewRootName(root: MemoryRegion): string | null {
  let mr = root;
  while (mr.enabled) {
    if (mr.kindCode === K_ALIAS) {
      if (mr.aliasOffset === 0 && mr.size >= mr.aliasTarget!.size) {
        mr = mr.aliasTarget!;
        continue;
      }
    } else if (mr.kindCode === K_CONTAINER) {
      let found = 0;
      let next: MemoryRegion | null = null;
      for (const c of mr.subregions) {
        if (!c.enabled) continue;
        if (++found > 1) {
          next = null;
          break;
        }
        if (c.offset === 0 && mr.size >= c.size) next = c;
      }
      if (found === 0) return null;
      if (next !== null) {
        mr = next;
        continue;
      }
    }
    return mr.name;
  }
  return null;
}

function flatLine(r: FlatRange, annotate: MtreeOptions['annotate']): string {
  const mr = r.region;
  const type = r.readonly ? 'rom' : mtreeType(mr);
  const at = r.offsetInRegion !== 0 ? ` @${hex16(r.offsetInRegion)}` : '';
  const note = annotate?.(r);
  const extra = note !== undefined && note !== '' ? ` ${note}` : '';
  return `  ${hex16(r.addr)}-${hex16(lastOf(r.addr, r.size))} (prio ${mr.priority}, ${type}): ${mr.name}${at}${extra}`;
}

function renderFlat(spaces: AddressSpace[], region: MemoryRegion | null, opts: MtreeOptions): string {
  const out: string[] = [];
  let counter = 0;
  const emit = (header: string[], rootName: string | null, ranges: readonly FlatRange[]): void => {
    out.push(`FlatView #${counter++}`);
    out.push(...header);
    out.push(` Root memory region: ${rootName ?? '(none)'}`);
    if (ranges.length === 0) {
      out.push('  No rendered FlatView', '');
      return;
    }
    for (const r of ranges) out.push(flatLine(r, opts.annotate));
    out.push('');
  };
  if (region !== null) {
    emit([], flatViewRootName(region), renderFlatView(region).ranges);
  } else {
    // Address spaces with the same root share one flat view, and QEMU prints it once for all of them.
    const groups = new Map<MemoryRegion, AddressSpace[]>();
    for (const as of spaces) {
      const key = as.root;
      const g = groups.get(key);
      if (g === undefined) groups.set(key, [as]);
      else g.push(as);
    }
    for (const g of groups.values()) {
      const header = g.map((as) => {
        const alias = as.root.kindCode === K_ALIAS ? `, alias ${as.root.aliasTarget!.name}` : '';
        return ` AS "${as.name}", root: ${as.root.name}${alias}`;
      });
      emit(header, flatViewRootName(g[0].root), g[0].flatView.ranges);
    }
  }
  return out.join('\n') + '\n';
}

function renderTree(spaces: AddressSpace[], region: MemoryRegion | null, opts: MtreeOptions): string {
  const out: string[] = [];
  const aliasQueue: MemoryRegion[] = [];
  const showDisabled = opts.disabled === true;
  if (region !== null) {
    out.push(`memory-region: ${region.name}`);
    printRegion(out, region, 1, 0, aliasQueue, showDisabled);
    out.push('');
  } else {
    const byRoot = new Map<MemoryRegion, AddressSpace[]>();
    for (const as of spaces) {
      const g = byRoot.get(as.root);
      if (g === undefined) byRoot.set(as.root, [as]);
      else g.push(as);
    }
    for (const [root, g] of byRoot) {
      const names = g.map((as) => as.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      for (const n of names) out.push(`address-space: ${n}`);
      printRegion(out, root, 1, 0, aliasQueue, showDisabled);
      out.push('');
    }
  }
  // The queue grows while it is printed: alias targets found inside alias targets come last.
  for (let i = 0; i < aliasQueue.length; i++) {
    out.push(`memory-region: ${aliasQueue[i].name}`);
    printRegion(out, aliasQueue[i], 1, 0, aliasQueue, showDisabled);
    out.push('');
  }
  return out.join('\n') + '\n';
}

/**
 * Renders address spaces (or one region) as QEMU's `info mtree` does, or with `flat: true` as
 * `info mtree -f` does. Lines are `%016x-%016x (prio N, TYPE): NAME`, indented two spaces per level in
 * the tree form, with `alias NAME @TARGET START-END` for aliases and ` @%016x` for flat ranges that
 * start inside their region. Alias targets follow as `memory-region:` sections.
 */
export function renderMtree(
  target: AddressSpace | MemoryRegion | readonly AddressSpace[],
  opts: MtreeOptions = {},
): string {
  let spaces: AddressSpace[] = [];
  let region: MemoryRegion | null = null;
  if (target instanceof MemoryRegion) region = target;
  else if (target instanceof AddressSpace) spaces = [target];
  else if (Array.isArray(target) && target.every((t) => t instanceof AddressSpace)) spaces = [...target];
  else throw new ArgTypeError('renderMtree needs an AddressSpace, an array of them, or a MemoryRegion');
  if (opts.annotate !== undefined && typeof opts.annotate !== 'function') {
    throw new ArgTypeError('annotate must be a function');
  }
  return opts.flat === true ? renderFlat(spaces, region, opts) : renderTree(spaces, region, opts);
}

/** JSON form of one region and its subtree (alias targets are named, not inlined). */
export interface MtreeNodeJson {
  /** The region's name. */
  name: string;
  /** The region's kind, as created (an alias stays `alias`). */
  kind: MemoryRegion['kind'];
  /** QEMU's type word: ram, rom, ramd, i/o or container. */
  type: string;
  /** Absolute first and last address, as in the tree form. */
  start: number;
  /** Last address the region covers (`start` itself when `size` is 0). */
  end: number;
  /** Size in bytes. */
  size: number;
  /** Offset in the parent region (0 for a root). */
  offset: number;
  /** Priority among its siblings. */
  priority: number;
  /** Whether the region takes part in its address spaces; disabled ones are listed too. */
  enabled: boolean;
  /** The region's own read-only flag (its ancestors' flags also apply to it). */
  readonly: boolean;
  /** For an alias only: the target region's name and where in it the alias starts (bytes). */
  alias?: {
    /** Name of the target region, listed in `aliasTargets`. */
    target: string;
    /** Offset in the target where the alias starts, in bytes. */
    offset: number;
  };
  /** Subregions in print order: by address, then higher priority first. */
  subregions: MtreeNodeJson[];
}

/** JSON form of one flat range. */
export interface MtreeFlatJson {
  /** First address of the range. */
  start: number;
  /** Last address of the range (inclusive). */
  end: number;
  /** Length in bytes. */
  size: number;
  /** Name of the terminal region serving it (aliases resolved). */
  region: string;
  /** Where `start` falls inside that region, in bytes. */
  offsetInRegion: number;
  /** How accesses are served (see {@link FlatRange.kind}). */
  kind: FlatRange['kind'];
  /** QEMU's type word, `rom` when the range is read-only. */
  type: string;
  /** True if the region or anything above it on the path is read-only. */
  readonly: boolean;
  /** The terminal region's priority among its siblings. */
  priority: number;
}

function nodeJson(mr: MemoryRegion, base: number, aliasQueue: MemoryRegion[]): MtreeNodeJson {
  const start = base + mr.offset;
  const n: MtreeNodeJson = {
    name: mr.name,
    kind: mr.kind,
    type: mtreeType(mr),
    start,
    end: lastOf(start, mr.size),
    size: mr.size,
    offset: mr.offset,
    priority: mr.priority,
    enabled: mr.enabled,
    readonly: mr.readonly,
    subregions: [],
  };
  if (mr.kindCode === K_ALIAS) {
    const t = mr.aliasTarget!;
    n.alias = { target: t.name, offset: mr.aliasOffset };
    if (!aliasQueue.includes(t)) aliasQueue.push(t);
  }
  for (const c of printOrder(mr)) n.subregions.push(nodeJson(c, start, aliasQueue));
  return n;
}

/**
 * The tree (in print order, disabled regions included), the flat view, and the trees of every alias
 * target (as the `memory-region:` sections of the text form) of an address space.
 */
export function mtreeJson(as: AddressSpace): {
  /** The address space's root region and everything under it. */
  tree: MtreeNodeJson;
  /** The current flat view, in ascending address order. */
  flat: MtreeFlatJson[];
  /** Each region an alias points at, with its own subtree (addresses start at 0). */
  aliasTargets: MtreeNodeJson[];
} {
  if (!(as instanceof AddressSpace)) throw new ArgTypeError('mtreeJson needs an AddressSpace');
  const aliasQueue: MemoryRegion[] = [];
  const tree = nodeJson(as.root, 0, aliasQueue);
  const aliasTargets: MtreeNodeJson[] = [];
  for (let i = 0; i < aliasQueue.length; i++) aliasTargets.push(nodeJson(aliasQueue[i], 0, aliasQueue));
  const flat = as.flatView.ranges.map((r) => ({
    start: r.addr,
    end: lastOf(r.addr, r.size),
    size: r.size,
    region: r.region.name,
    offsetInRegion: r.offsetInRegion,
    kind: r.kind,
    type: r.readonly ? 'rom' : mtreeType(r.region),
    readonly: r.readonly,
    priority: r.region.priority,
  }));
  return { tree, flat, aliasTargets };
}
