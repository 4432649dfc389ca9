import type { native } from '../native';
import { MEMORY_HANDLE } from '../base/host-memory';
import { kvmError } from './errors';
import type { MemorySlot, QueuedSlot, SlotSpec, SlotTable } from './slots';
import { KVM_MEM_READONLY } from './uapi';

/** One KVM_SET_USER_MEMORY_REGION as the addon takes it: slot, flags, gpa, size, memory, offset. */
export type SlotOp = Parameters<typeof native.kvmSetUserMemoryRegionsAsync>[1][number];

/** The op that gives KVM `slot`. */
export function addOp(slot: MemorySlot): SlotOp {
  return [
    slot.id,
    slot.readonly ? KVM_MEM_READONLY : 0,
    slot.guestAddress,
    slot.size,
    slot.memory[MEMORY_HANDLE](),
    slot.offset,
  ];
}

/** The op that deletes `slot` from KVM (size 0). */
export function removeOp(slot: MemorySlot): SlotOp {
  return [slot.id, 0, slot.guestAddress, 0, null, 0];
}

/**
 * Gives KVM a batch of ops in order (the addon's kvmSetUserMemoryRegionsAsync on the VM): one
 * result per op, undefined or its refusal. Null when the VM is closed.
 */
export type SlotSender = (ops: readonly SlotOp[]) => Promise<(Error | undefined)[]> | null;

interface Queued {
  readonly op: SlotOp;
  /** The slot an add made (released again if KVM refuses it), or the slot a removal deletes. */
  readonly slot: MemorySlot;
  readonly isAdd: boolean;
  resolve(): void;
  reject(e: unknown): void;
}

/**
 * A VM's memory slot changes given to KVM on the libuv thread pool, in the order they were queued.
 * Under nested virtualization one KVM_SET_USER_MEMORY_REGION takes milliseconds (KVM waits for
 * every vCPU to leave the old memory map), so a guest that moves a BAR or toggles decode would hold
 * the event loop for each. The slot table is updated when a change is queued, so the next change
 * (a slot number reused, an overlap checked) already sees it; KVM gets the changes in that same
 * order: those queued in one synchronous stretch go in one batch, and a batch is sent only when
 * the one before has settled.
 */
export class SlotQueue {
  readonly #sendOps: SlotSender;
  readonly #table: SlotTable;
  #queued: Queued[] = [];
  #inFlight = false;
  #scheduled = false;
  /** Slots whose add KVM refused: their removal is not sent (KVM would refuse it too). */
  readonly #refused = new WeakSet<MemorySlot>();
  #idle: (() => void)[] = [];
  #pending: Promise<void> | null = null;

  constructor(send: SlotSender, table: SlotTable) {
    this.#sendOps = send;
    this.#table = table;
  }

  /** Resolves once every change queued so far has reached KVM; null when none is waiting. */
  get pending(): Promise<void> | null {
    if (!this.#inFlight && this.#queued.length === 0) return null;
    this.#pending ??= new Promise<void>((resolve) => this.#idle.push(resolve));
    return this.#pending;
  }

  /** Queue `spec`'s slot: reserved now (bad specs throw here), in KVM once `done` resolves. */
  add(spec: SlotSpec): QueuedSlot {
    const slot = this.#table.reserve(spec);
    return { slot, done: this.#enqueue(addOp(slot), slot, true) };
  }

  /** Queue `slot`'s removal: gone from the table now, from KVM once the promise resolves. */
  remove(slot: MemorySlot): Promise<void> {
    if (!this.#table.has(slot)) return Promise.resolve();
    this.#table.release(slot);
    return this.#enqueue(removeOp(slot), slot, false);
  }

  #enqueue(op: SlotOp, slot: MemorySlot, isAdd: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queued.push({ op, slot, isAdd, resolve, reject });
      if (!this.#inFlight && !this.#scheduled) {
        this.#scheduled = true;
        queueMicrotask(() => this.#send());
      }
    });
  }

  #send(): void {
    this.#scheduled = false;
    if (this.#inFlight) return;
    const batch = this.#queued.splice(0).filter((q) => {
      if (q.isAdd || !this.#refused.has(q.slot)) return true;
      q.resolve(); // never in KVM: nothing to remove
      return false;
    });
    if (batch.length === 0) return this.#settled();
    this.#inFlight = true;
    // Each op is refused alone (a memory closed since its add was queued), the others still go;
    // a batch that could not be queued at all (no fd left) is refused whole.
    let sent: Promise<(Error | undefined)[]> | null;
    try {
      sent = this.#sendOps(batch.map((q) => q.op));
    } catch (e) {
      sent = Promise.reject(e);
    }
    if (sent === null) {
      this.#inFlight = false;
      const e = kvmError(
        'KVM_SET_USER_MEMORY_REGION',
        'ECLOSED',
        'the VM was closed before its queued slot changes reached KVM',
        'its slots went with it',
      );
      // Adds never reached KVM; removals have nothing left to remove.
      for (const q of batch) this.#outcome(q, q.isAdd ? e : undefined);
      return this.#settled();
    }
    // The queue's state is settled before any of the batch's promises: code that awaited an add
    // may change slots synchronously at once when nothing else is queued.
    const finish = (errorOf: (i: number) => unknown): void => {
      this.#inFlight = false;
      batch.forEach((q, i) => this.#outcome(q, errorOf(i)));
      if (this.#queued.length > 0) this.#send();
      else this.#settled();
    };
    void sent.then(
      (results) => finish((i) => results[i]),
      (e: unknown) => finish(() => e),
    );
  }

  #outcome(q: Queued, error: unknown): void {
    // A removal in the same batch as its refused add: KVM never had the slot.
    if (error === undefined || (!q.isAdd && this.#refused.has(q.slot))) return q.resolve();
    if (q.isAdd) {
      this.#refused.add(q.slot);
      this.#table.release(q.slot);
    }
    q.reject(error);
  }

  #settled(): void {
    if (this.#inFlight || this.#queued.length > 0) return;
    this.#pending = null;
    for (const w of this.#idle.splice(0)) w();
  }
}
