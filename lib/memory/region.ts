/**
 * The region tree: containers, I/O regions, RAM, RAM devices and aliases, with QEMU's
 * docs/devel/memory.rst semantics for placement, priorities and mutation.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { assertMutable, noteChanged, topologyChanged } from './transaction';
import { IoOps } from './io-ops';
import { RamBacking, type RamBuffer, type RamBufferFactory } from './ram-backing';
import {
  K_ALIAS,
  K_RAM,
  K_RAM_DEVICE,
  KIND_CODES,
  MemoryTopologyError,
  type FixedWidthMemory,
  type MemoryRegionOps,
  type RegionKind,
} from './types';
import {
  checkAddress,
  checkFixedWidthMemory,
  checkPriority,
  checkAliasWindow,
  checkRegionName,
} from './validate';

let nextSeq = 1;

function checkSize(what: string, size: unknown): number {
  return checkAddress(`${what} size`, size);
}

/**
 * A node of the memory topology. Create regions with the static factories, place them with
 * {@link MemoryRegion.addSubregion}, and look at the result through an `AddressSpace`.
 *
 * Priorities are compared only among siblings; the higher one wins, and among equal priorities the
 * most recently added wins. A container (or alias) that leaves holes lets lower-priority siblings show
 * through; anything outside a region's size is clipped. Every mutation commits at once unless a
 * transaction is open.
 */
export class MemoryRegion {
  /** Which of the five kinds this is. */
  readonly kind: RegionKind;
  /** Debugging name, printed by `renderMtree`. */
  readonly name: string;
  /** Free for the owner; the memory model never reads it. */
  tag: unknown = undefined;

  private readonly _kind: number;
  private _size: number;
  private _enabled = true;
  private _readonly = false;
  private _priority = 0;
  private _offset = 0;
  private _parent: MemoryRegion | null = null;
  /** Insertion order among all regions, for the newest-wins rule. */
  private _seq = 0;
  /** Children in the order they were added. */
  private readonly _children: MemoryRegion[] = [];
  /** Children in priority order, rebuilt lazily after a change. */
  private _sorted: readonly MemoryRegion[] | null = null;

  /** io: the callbacks and their access rules. */
  private _io: IoOps | null = null;

  /** ram: the backing (given, or made on first access) and its view once made. */
  private _ram: RamBacking | null = null;
  private _dv: DataView | null = null;

  /** ram-device: the fixed-width memory behind it. */
  private _memory: FixedWidthMemory | null = null;

  /** alias: what it shows, and from where. */
  private _target: MemoryRegion | null = null;
  private _aliasOffset = 0;

  private constructor(kind: RegionKind, name: string, size: number) {
    this.kind = kind;
    this._kind = KIND_CODES[kind];
    this.name = name;
    this._size = size;
  }

  /** A pure container: it only holds subregions, and its holes are unassigned. */
  static container(name: string, size: number): MemoryRegion {
    return new MemoryRegion('container', checkRegionName(name), checkSize('container', size));
  }

  /**
   * An MMIO or port I/O region implemented by callbacks. `ops.valid` gives the access sizes and
   * alignment the device accepts (defaults 1..4, aligned only); `ops.impl` gives those the callbacks
   * implement (defaults 1..4), other valid accesses being split or widened to fit.
   */
  static io(name: string, size: number, ops: MemoryRegionOps): MemoryRegion {
    const r = new MemoryRegion('io', checkRegionName(name), checkSize('io region', size));
    r._io = new IoOps(name, ops);
    return r;
  }

  /**
   * Guest RAM backed by an ArrayBuffer or SharedArrayBuffer (little-endian, any alignment). Without
   * `backing`, a zeroed buffer of `size` bytes is allocated on first access. A function as `backing`
   * makes the buffer (of at least `size` bytes) on the first access through the memory model, so
   * big memory becomes an ArrayBuffer only if something here reads or writes it.
   */
  static ram(name: string, size: number, backing?: RamBuffer | RamBufferFactory): MemoryRegion {
    const r = new MemoryRegion('ram', checkRegionName(name), checkSize('ram', size));
    r._ram = new RamBacking(backing, size, name);
    if (r._ram.buffer !== null) r._dv = new DataView(r._ram.buffer);
    return r;
  }

  /**
   * Device memory (a mapped BAR): every access is exactly one load or store of the access size on
   * `memory`, aligned or not, never a byte copy, as QEMU's ram-device regions do.
   */
  static ramDevice(name: string, size: number, memory: FixedWidthMemory): MemoryRegion {
    const r = new MemoryRegion('ram-device', checkRegionName(name), checkSize('ram-device', size));
    checkFixedWidthMemory(name, memory, size);
    r._memory = memory;
    return r;
  }

  /**
   * A window of `size` bytes into `target` starting at `offset`. The target's own placement is
   * ignored: the alias shows the target's contents wherever the alias itself is placed.
   */
  static alias(name: string, target: MemoryRegion, offset: number, size: number): MemoryRegion {
    checkRegionName(name);
    if (!(target instanceof MemoryRegion))
      throw new ArgTypeError(`target of alias '${name}' must be a MemoryRegion`);
    checkAddress(`alias '${name}' offset`, offset);
    checkSize('alias', size);
    checkAliasWindow(name, target, offset, size);
    const r = new MemoryRegion('alias', name, size);
    r._target = target;
    r._aliasOffset = offset;
    return r;
  }

  /** Size in bytes. */
  get size(): number {
    return this._size;
  }
  /** Whether the region takes part in its address spaces. */
  get enabled(): boolean {
    return this._enabled;
  }
  /** Whether guest writes through this region are refused (ROM). Inherited by everything below. */
  get readonly(): boolean {
    return this._readonly;
  }
  /** Priority among its siblings. */
  get priority(): number {
    return this._priority;
  }
  /** Offset in the parent. */
  get offset(): number {
    return this._offset;
  }
  /** The region this one is a subregion of, if any. */
  get parent(): MemoryRegion | null {
    return this._parent;
  }
  /** Subregions in priority order (highest first, newest first among equals), as QEMU keeps them. */
  get subregions(): readonly MemoryRegion[] {
    return this._sortedChildren();
  }
  /** The region an alias shows (null for other kinds). */
  get aliasTarget(): MemoryRegion | null {
    return this._target;
  }
  /** Where in its target an alias starts (0 for other kinds). */
  get aliasOffset(): number {
    return this._aliasOffset;
  }
  /** The callbacks of an io region (null for other kinds). */
  get ops(): MemoryRegionOps | null {
    return this._io === null ? null : this._io.ops;
  }
  /** The fixed-width memory of a ram-device region (null for other kinds). */
  get memory(): FixedWidthMemory | null {
    return this._memory;
  }
  /**
   * The backing store of a ram region, made now if it was deferred (allocated, or asked of its
   * factory); null for other kinds.
   */
  get backing(): RamBuffer | null {
    if (this._kind !== K_RAM) return null;
    return this.ramView.buffer as ArrayBuffer | SharedArrayBuffer;
  }

  /** @internal The kind as one of the K_ codes above, which the dispatch path compares cheaply. */
  get kindCode(): number {
    return this._kind;
  }
  /** @internal The resolved callbacks and access rules of an io region (null for other kinds). */
  get io(): IoOps | null {
    return this._io;
  }
  /** @internal A ram region's view of its backing, making a deferred backing now. */
  get ramView(): DataView {
    return this._dv ?? (this._dv = new DataView(this._ram!.make(this.name)));
  }
  /** @internal A ram region's backing as it is now, without making it: null while deferred. */
  get allocatedBacking(): RamBuffer | null {
    return this._ram === null ? null : this._ram.buffer;
  }
  /**
   * @internal Whether a ram region's backing no longer holds it: its owner released it, its
   * ArrayBuffer was detached (its owner, e.g. GuestRam, closed it) or a resizable one shrank.
   */
  get backingLost(): boolean {
    return this._ram !== null && this._ram.lost(this._size);
  }
  /**
   * @internal The owner of a lazily-backed region's memory closed it: from its next rendering on the
   * region shows nothing, as one whose buffer was detached; its factory is the owner's to refuse.
   */
  releaseBacking(): void {
    this._ram?.release();
  }

  private _sortedChildren(): readonly MemoryRegion[] {
    let s = this._sorted;
    if (s === null) {
      s = this._sorted = Object.freeze(this._children.slice().sort(MemoryRegion._bySiblingOrder));
    }
    return s;
  }

  /** Orders siblings as QEMU's subregion list does: highest priority first, newest first among equals. */
  private static _bySiblingOrder(this: void, a: MemoryRegion, b: MemoryRegion): number {
    return b._priority - a._priority || b._seq - a._seq;
  }

  /**
   * Places `child` at `offset` in this region. Higher `priority` wins among overlapping siblings;
   * equal priorities are won by the most recently added. Subregions may be added to any kind except
   * an alias; in an io, ram or ram-device region they cover the region's own contents.
   */
  addSubregion(child: MemoryRegion, offset: number, priority = 0): void {
    if (!(child instanceof MemoryRegion)) throw new ArgTypeError('subregion must be a MemoryRegion');
    checkAddress(`offset of '${child.name}' in '${this.name}'`, offset);
    checkPriority(priority);
    if (this._kind === K_ALIAS) {
      throw new MemoryTopologyError(
        'not-a-container',
        `cannot add '${child.name}' to alias '${this.name}': an alias has no subregions`,
      );
    }
    if (child._parent !== null) {
      throw new MemoryTopologyError(
        'already-attached',
        `cannot add '${child.name}' to '${this.name}': it is already a subregion of '${child._parent.name}'`,
      );
    }
    if (child === this || reaches(child, this)) {
      throw new MemoryTopologyError(
        'cycle',
        `cannot add '${child.name}' to '${this.name}': '${this.name}' is reachable from '${child.name}', which would make a cycle`,
      );
    }
    assertMutable();
    child._parent = this;
    child._offset = offset;
    child._priority = priority;
    child._seq = nextSeq++;
    this._children.push(child);
    this._sorted = null;
    // From the child: an address space rooted at it moves with its new offset, as in QEMU.
    topologyChanged(child);
  }

  /** Detaches `child`, which must be a direct subregion of this region. */
  removeSubregion(child: MemoryRegion): void {
    if (!(child instanceof MemoryRegion)) throw new ArgTypeError('subregion must be a MemoryRegion');
    if (child._parent !== this) {
      throw new MemoryTopologyError(
        'not-a-child',
        `cannot remove '${child.name}' from '${this.name}': it is ${
          child._parent === null ? 'not a subregion of any region' : `a subregion of '${child._parent.name}'`
        }`,
      );
    }
    assertMutable();
    noteChanged(child);
    const i = this._children.indexOf(child);
    this._children.splice(i, 1);
    this._sorted = null;
    child._parent = null;
    topologyChanged(this);
  }

  /**
   * Moves the region within its parent (QEMU's memory_region_set_address). As in QEMU, a moved
   * subregion is re-added, so it becomes the newest among siblings of equal priority.
   */
  setOffset(o: number): void {
    checkAddress(`offset of '${this.name}'`, o);
    if (o === this._offset) return;
    assertMutable();
    this._offset = o;
    this._readd();
    topologyChanged(this);
  }

  /** Re-inserts the region among its siblings as if just added. */
  private _readd(): void {
    if (this._parent === null) return;
    this._seq = nextSeq++;
    this._parent._sorted = null;
  }

  /** Resizes the region. A ram or ram-device region cannot outgrow its backing. */
  setSize(s: number): void {
    checkSize(`'${this.name}'`, s);
    if (this._kind === K_RAM && s > this._ram!.capacity) {
      throw new ArgRangeError(
        `ram region '${this.name}' size ${s} exceeds its backing of ${this._ram!.capacity} bytes`,
      );
    }
    if (this._kind === K_RAM_DEVICE && s > this._memory!.length) {
      throw new ArgRangeError(
        `ram-device region '${this.name}' size ${s} exceeds its memory of ${this._memory!.length} bytes`,
      );
    }
    if (this._kind === K_ALIAS) checkAliasWindow(this.name, this._target!, this._aliasOffset, s);
    if (s === this._size) return;
    assertMutable();
    this._size = s;
    topologyChanged(this);
  }

  /** Shows or hides the region (and everything below it). */
  setEnabled(e: boolean): void {
    if (typeof e !== 'boolean') throw new ArgTypeError(`enabled must be a boolean, got ${typeof e}`);
    if (e === this._enabled) return;
    assertMutable();
    this._enabled = e;
    topologyChanged(this);
  }

  /**
   * Changes the priority among siblings. The region is re-added, as a move is, so among equal
   * priorities it becomes the newest.
   */
  setPriority(p: number): void {
    checkPriority(p);
    if (p === this._priority) return;
    assertMutable();
    this._priority = p;
    this._readd();
    topologyChanged(this);
  }

  /** Makes guest writes through this region (and everything below it) be refused or allowed. */
  setReadonly(r: boolean): void {
    if (typeof r !== 'boolean') throw new ArgTypeError(`readonly must be a boolean, got ${typeof r}`);
    if (r === this._readonly) return;
    assertMutable();
    this._readonly = r;
    topologyChanged(this);
  }

  /** Moves an alias's window within its target (QEMU's memory_region_set_alias_offset). */
  setAliasOffset(o: number): void {
    if (this._kind !== K_ALIAS) {
      throw new MemoryTopologyError('not-an-alias', `'${this.name}' is a ${this.kind} region, not an alias`);
    }
    checkAddress(`alias offset of '${this.name}'`, o);
    checkAliasWindow(this.name, this._target!, o, this._size);
    if (o === this._aliasOffset) return;
    assertMutable();
    this._aliasOffset = o;
    topologyChanged(this);
  }

  /** The region's name and kind, for messages. */
  toString(): string {
    return `MemoryRegion(${this.kind} '${this.name}', size 0x${this._size.toString(16)})`;
  }
}

/** Whether `to` can be reached from `from` through subregions and alias targets. */
function reaches(from: MemoryRegion, to: MemoryRegion): boolean {
  const seen = new Set<MemoryRegion>();
  const stack = [from];
  while (stack.length > 0) {
    const r = stack.pop()!;
    if (r === to) return true;
    if (seen.has(r)) continue;
    seen.add(r);
    if (r.aliasTarget !== null) stack.push(r.aliasTarget);
    for (const c of r.subregions) stack.push(c);
  }
  return false;
}
