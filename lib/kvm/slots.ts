import { ArgRangeError, ArgTypeError } from '../base/error';
import { isHostMemory, type HostMemory } from '../base/host-memory';
import { kvmError } from './errors';

/** What a memory slot is made of. */
export interface SlotSpec {
  /** Guest physical address (page-aligned). */
  guestAddress: number;
  /** Bytes (a multiple of the page size, at least one page). */
  size: number;
  /**
   * The backing memory (a `Mapping` or `GuestRam`) and where in it the slot starts (default 0). The
   * slot pins its pages: closing the memory while the slot exists unmaps them only when the slot
   * goes.
   */
  memory: HostMemory;
  /** Where in `memory` the slot starts, in bytes (page-aligned; default 0). */
  offset?: number;
  /** Guest writes exit as MMIO instead of landing in the memory (KVM_MEM_READONLY). */
  readonly?: boolean;
  /** For listings and errors, e.g. the region's name. */
  name?: string;
}

/** A memory slot in use. */
export interface MemorySlot {
  /** KVM's slot number (reused after the slot is removed). */
  readonly id: number;
  /** Guest-physical address of the first byte. */
  readonly guestAddress: number;
  /** Size in bytes (a whole number of pages). */
  readonly size: number;
  /** The memory behind it (a `Mapping` or `GuestRam`), pinned while the slot exists. */
  readonly memory: HostMemory;
  /** Where in `memory` the slot starts, in bytes (page-aligned). */
  readonly offset: number;
  /** Whether guest writes exit as MMIO (KVM_MEM_READONLY). */
  readonly readonly: boolean;
  /** The spec's name, or `slot` when it had none. */
  readonly name: string;
}

/** A slot queued for KVM ({@link Vm.queueSlotAdd}). */
export interface QueuedSlot {
  /** The slot, reserved in the VM's slot table from the moment it was queued. */
  readonly slot: MemorySlot;
  /** Resolves once KVM has the slot; rejects with its refusal (the slot is then released). */
  readonly done: Promise<void>;
}

/** The VM side of slot management: a {@link Vm} or, in unit tests, a fake. */
export interface SlotTarget {
  /** See {@link Vm.addSlot}. */
  addSlot(spec: SlotSpec): MemorySlot;
  /** See {@link Vm.removeSlot}. */
  removeSlot(slot: MemorySlot): void;
  /** See {@link Vm.queueSlotAdd}; needed by a listener that queues its changes. */
  queueSlotAdd?(spec: SlotSpec): QueuedSlot;
  /** See {@link Vm.queueSlotRemoval}; needed by a listener that queues its changes. */
  queueSlotRemoval?(slot: MemorySlot): Promise<void>;
}

/**
 * The slot numbers of one VM: which are free, which are in use and for what. Slots never overlap
 * in guest-physical space; that is checked here, before KVM would refuse it with a bare EEXIST.
 */
export class SlotTable {
  readonly #max: number;
  readonly #pageSize: number;
  readonly #used = new Map<number, MemorySlot>();
  #next = 0;
  readonly #free: number[] = [];

  constructor(max: number, pageSize: number) {
    this.#max = max;
    this.#pageSize = pageSize;
  }

  /** How many slots the VM has (KVM_CAP_NR_MEMSLOTS). */
  get capacity(): number {
    return this.#max;
  }

  /** How many slots are in use. */
  get used(): number {
    return this.#used.size;
  }

  /** The slots in use, by guest address. */
  list(): MemorySlot[] {
    return [...this.#used.values()].sort((a, b) => a.guestAddress - b.guestAddress);
  }

  /** Validate `spec` and reserve a slot number for it (not yet in KVM). */
  reserve(spec: SlotSpec): MemorySlot {
    if (spec === null || typeof spec !== 'object') throw new ArgTypeError('slot spec must be an object');
    const { guestAddress, size } = spec;
    const offset = spec.offset ?? 0;
    const name = spec.name ?? 'slot';
    for (const [what, v] of [
      ['guest address', guestAddress],
      ['size', size],
      ['offset', offset],
    ] as const) {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
        throw new ArgRangeError(`${name}: ${what} ${String(v)} is not a non-negative safe integer`);
      }
      if (v % this.#pageSize !== 0) {
        throw new ArgRangeError(
          `${name}: ${what} 0x${v.toString(16)} is not a multiple of the page size ${this.#pageSize}`,
        );
      }
    }
    if (size === 0) throw new ArgRangeError(`${name}: a slot must cover at least one page`);
    const mem = spec.memory;
    if (!isHostMemory(mem)) {
      throw new ArgTypeError(`${name}: memory must be a Mapping or GuestRam`);
    }
    if (offset + size > mem.length) {
      throw new ArgRangeError(
        `${name}: offset 0x${offset.toString(16)} + size 0x${size.toString(16)} exceeds the memory (${mem.length} bytes)`,
      );
    }
    for (const s of this.#used.values()) {
      if (guestAddress < s.guestAddress + s.size && s.guestAddress < guestAddress + size) {
        throw new ArgRangeError(
          `${name}: guest 0x${guestAddress.toString(16)}+0x${size.toString(16)} overlaps slot ${s.id} (${s.name})`,
        );
      }
    }
    const id = this.#free.length > 0 ? this.#free.pop()! : this.#next < this.#max ? this.#next++ : -1;
    if (id < 0) {
      throw kvmError(
        'KVM_SET_USER_MEMORY_REGION',
        'ENOSLOT',
        `${name}: all ${this.#max} memory slots are in use`,
        'each direct BAR range and each RAM block takes a slot: remove unused ones',
      );
    }
    const slot: MemorySlot = {
      id,
      guestAddress,
      size,
      memory: mem,
      offset,
      readonly: spec.readonly === true,
      name,
    };
    this.#used.set(id, slot);
    return slot;
  }

  /** Give back a reservation that KVM refused, or a slot that was removed. */
  release(slot: MemorySlot): void {
    if (this.#used.get(slot.id) !== slot) return;
    this.#used.delete(slot.id);
    this.#free.push(slot.id);
  }

  /** Whether `slot` is one of this table's live slots. */
  has(slot: MemorySlot): boolean {
    return this.#used.get(slot.id) === slot;
  }
}
