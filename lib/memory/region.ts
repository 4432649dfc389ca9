/**
 * The region tree: containers, I/O regions, RAM, RAM devices and aliases, with QEMU's
 * docs/devel/memory.rst semantics for placement, priorities and mutation.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { assertMutable, noteChanged, topologyChanged } from './transaction';
import {
  MemoryTopologyError,
  type AccessSize,
  type FixedWidthMemory,
  type MemoryRegionOps,
  type RegionKind,
} from './types';
import { checkAddress, checkPriority } from './validate';

/** @internal Numeric kind codes, so the dispatch path compares small integers instead of strings. */
export const K_CONTAINER = 0;
/** @internal */
export const K_IO = 1;
/** @internal */
export const K_RAM = 2;
/** @internal */
export const K_RAM_DEVICE = 3;
/** @internal */
export const K_ALIAS = 4;

const KIND_CODES: Record<RegionKind, number> = {
  container: K_CONTAINER,
  io: K_IO,
  ram: K_RAM,
  'ram-device': K_RAM_DEVICE,
  alias: K_ALIAS,
};

/** Orders siblings as QEMU's subregion list does: highest priority first, newest first among equals. */
function bySiblingOrder(a: MemoryRegion, b: MemoryRegion): number {
  return b._priority - a._priority || b._seq - a._seq;
}

let nextSeq = 1;

const FIXED_WIDTH_METHODS = [
  'read8',
  'read16',
  'read32',
  'read64',
  'write8',
  'write16',
  'write32',
  'write64',
] as const;

function checkName(name: unknown): string {
  if (typeof name !== 'string') throw new ArgTypeError(`region name must be a string, got ${typeof name}`);
  return name;
}

function checkSize(what: string, size: unknown): number {
  return checkAddress(`${what} size`, size);
}

function checkAccessSizeOption(where: string, v: unknown, dflt: AccessSize): AccessSize {
  if (v === undefined) return dflt;
  if (v === 1 || v === 2 || v === 4 || v === 8) return v;
  throw new ArgRangeError(`${where} ${String(v)} is invalid: must be 1, 2, 4 or 8`);
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

  /** @internal */ _kind: number;
  /** @internal */ _size: number;
  /** @internal */ _enabled = true;
  /** @internal */ _readonly = false;
  /** @internal */ _priority = 0;
  /** @internal */ _offset = 0;
  /** @internal */ _parent: MemoryRegion | null = null;
  /** @internal Insertion order among all regions, for the newest-wins rule. */
  _seq = 0;
  /** @internal Children in the order they were added. */
  _children: MemoryRegion[] = [];
  /** @internal Children in priority order, rebuilt lazily after a change. */
  _sorted: readonly MemoryRegion[] | null = null;

  /** @internal io: callbacks and resolved constraints. */
  _ops: MemoryRegionOps | null = null;
  /** @internal */ _validMin = 1;
  /** @internal */ _validMax = 4;
  /** @internal */ _validUnaligned = false;
  /** @internal */ _accepts: ((offset: number, size: AccessSize, isWrite: boolean) => boolean) | null = null;
  /** @internal */ _implMin = 1;
  /** @internal */ _implMax = 4;

  /** @internal ram: backing store (allocated on first access when none was given) and its view. */
  _backing: ArrayBuffer | SharedArrayBuffer | null = null;
  /** @internal */ _capacity = 0;
  /** @internal */ _dv: DataView | null = null;

  /** @internal ram-device: the fixed-width memory behind it. */
  _memory: FixedWidthMemory | null = null;

  /** @internal alias: what it shows, and from where. */
  _target: MemoryRegion | null = null;
  /** @internal */ _aliasOffset = 0;

  private constructor(kind: RegionKind, name: string, size: number) {
    this.kind = kind;
    this._kind = KIND_CODES[kind];
    this.name = name;
    this._size = size;
  }

  /** A pure container: it only holds subregions, and its holes are unassigned. */
  static container(name: string, size: number): MemoryRegion {
    return new MemoryRegion('container', checkName(name), checkSize('container', size));
  }

  /**
   * An MMIO or port I/O region implemented by callbacks. `ops.valid` gives the access sizes and
   * alignment the device accepts (defaults 1..4, aligned only); `ops.impl` gives those the callbacks
   * implement (defaults 1..4), other valid accesses being split or widened to fit.
   */
  static io(name: string, size: number, ops: MemoryRegionOps): MemoryRegion {
    const r = new MemoryRegion('io', checkName(name), checkSize('io region', size));
    if (ops === null || typeof ops !== 'object')
      throw new ArgTypeError(`ops of region '${name}' must be an object`);
    if (typeof ops.read !== 'function' || typeof ops.write !== 'function') {
      throw new ArgTypeError(`ops of region '${name}' must have read and write functions`);
    }
    const v = ops.valid ?? {};
    const i = ops.impl ?? {};
    r._validMin = checkAccessSizeOption(`${name}: valid.minAccessSize`, v.minAccessSize, 1);
    r._validMax = checkAccessSizeOption(`${name}: valid.maxAccessSize`, v.maxAccessSize, 4);
    r._implMin = checkAccessSizeOption(`${name}: impl.minAccessSize`, i.minAccessSize, 1);
    r._implMax = checkAccessSizeOption(`${name}: impl.maxAccessSize`, i.maxAccessSize, 4);
    if (r._validMin > r._validMax) {
      throw new ArgRangeError(
        `${name}: valid.minAccessSize ${r._validMin} exceeds valid.maxAccessSize ${r._validMax}`,
      );
    }
    if (r._implMin > r._implMax) {
      throw new ArgRangeError(
        `${name}: impl.minAccessSize ${r._implMin} exceeds impl.maxAccessSize ${r._implMax}`,
      );
    }
    r._validUnaligned = v.unaligned === true;
    if (i.unaligned === true && !r._validUnaligned) {
      throw new ArgRangeError(
        `${name}: impl.unaligned needs valid.unaligned (the device cannot see what it rejects)`,
      );
    }
    if (v.accepts !== undefined) {
      if (typeof v.accepts !== 'function')
        throw new ArgTypeError(`${name}: valid.accepts must be a function`);
      r._accepts = v.accepts.bind(v);
    }
    r._ops = ops;
    return r;
  }

  /**
   * Guest RAM backed by an ArrayBuffer or SharedArrayBuffer (little-endian, any alignment). Without
   * `backing`, a zeroed buffer of `size` bytes is allocated on first access.
   */
  static ram(name: string, size: number, backing?: ArrayBuffer | SharedArrayBuffer): MemoryRegion {
    const r = new MemoryRegion('ram', checkName(name), checkSize('ram', size));
    if (backing !== undefined) {
      const isBuffer =
        backing instanceof ArrayBuffer ||
        (typeof SharedArrayBuffer !== 'undefined' && backing instanceof SharedArrayBuffer);
      if (!isBuffer)
        throw new ArgTypeError(`backing of ram region '${name}' must be an ArrayBuffer or SharedArrayBuffer`);
      if (backing.byteLength < size) {
        throw new ArgRangeError(
          `ram region '${name}' size ${size} exceeds its backing of ${backing.byteLength} bytes`,
        );
      }
      r._backing = backing;
      r._capacity = backing.byteLength;
      r._dv = new DataView(backing);
    } else {
      r._capacity = size;
    }
    return r;
  }

  /**
   * Device memory (a mapped BAR): every access is exactly one load or store of the access size on
   * `memory`, aligned or not, never a byte copy, as QEMU's ram-device regions do.
   */
  static ramDevice(name: string, size: number, memory: FixedWidthMemory): MemoryRegion {
    const r = new MemoryRegion('ram-device', checkName(name), checkSize('ram-device', size));
    if (memory === null || typeof memory !== 'object') {
      throw new ArgTypeError(`memory of ram-device region '${name}' must be a FixedWidthMemory`);
    }
    for (const m of FIXED_WIDTH_METHODS) {
      if (typeof memory[m] !== 'function') {
        throw new ArgTypeError(
          `memory of ram-device region '${name}' must be a FixedWidthMemory: it has no ${m}()`,
        );
      }
    }
    if (!(memory.length >= size)) {
      throw new ArgRangeError(
        `ram-device region '${name}' size ${size} exceeds its memory of ${memory.length} bytes`,
      );
    }
    r._memory = memory;
    return r;
  }

  /**
   * A window of `size` bytes into `target` starting at `offset`. The target's own placement is
   * ignored: the alias shows the target's contents wherever the alias itself is placed.
   */
  static alias(name: string, target: MemoryRegion, offset: number, size: number): MemoryRegion {
    checkName(name);
    if (!(target instanceof MemoryRegion))
      throw new ArgTypeError(`target of alias '${name}' must be a MemoryRegion`);
    checkAddress(`alias '${name}' offset`, offset);
    checkSize('alias', size);
    checkWindow(name, target, offset, size);
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
    return this._ops;
  }
  /** The fixed-width memory of a ram-device region (null for other kinds). */
  get memory(): FixedWidthMemory | null {
    return this._memory;
  }
  /** The backing store of a ram region, allocated now if it was deferred (null for other kinds). */
  get backing(): ArrayBuffer | SharedArrayBuffer | null {
    if (this._kind !== K_RAM) return null;
    return this._ramView().buffer as ArrayBuffer | SharedArrayBuffer;
  }

  /** @internal */
  _ramView(): DataView {
    let dv = this._dv;
    if (dv === null) {
      this._backing = new ArrayBuffer(this._capacity);
      dv = this._dv = new DataView(this._backing);
    }
    return dv;
  }

  /** @internal */
  _sortedChildren(): readonly MemoryRegion[] {
    let s = this._sorted;
    if (s === null) {
      s = this._sorted = Object.freeze(this._children.slice().sort(bySiblingOrder));
    }
    return s;
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
    if (this._kind === K_RAM && s > this._capacity) {
      throw new ArgRangeError(
        `ram region '${this.name}' size ${s} exceeds its backing of ${this._capacity} bytes`,
      );
    }
    if (this._kind === K_RAM_DEVICE && s > this._memory!.length) {
      throw new ArgRangeError(
        `ram-device region '${this.name}' size ${s} exceeds its memory of ${this._memory!.length} bytes`,
      );
    }
    if (this._kind === K_ALIAS) checkWindow(this.name, this._target!, this._aliasOffset, s);
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
    checkWindow(this.name, this._target!, o, this._size);
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

/**
 * Refuses an alias window that does not fit in its target when it is set. A target that shrinks
 * later simply clips the window, as in QEMU.
 */
function checkWindow(name: string, target: MemoryRegion, offset: number, size: number): void {
  if (offset + size > target._size) {
    throw new ArgRangeError(
      `alias '${name}' window ${offset}+${size} exceeds its target '${target.name}' of ${target._size} bytes`,
    );
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
    if (r._target !== null) stack.push(r._target);
    for (const c of r._children) stack.push(c);
  }
  return false;
}
