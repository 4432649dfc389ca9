import { ArgTypeError } from '../base/error';
import { sinkOf, type GuestErrorSink } from '../base/guest-error';
import type { FlatRange, MemoryListener } from '../memory';
import { isHostMemory } from '../base/host-memory';
import type { MemorySlot, SlotTarget } from './slots';

/** A piece of a flat range, and whether KVM may map it (`direct`) or its accesses must exit. */
export interface SlotPiece {
  /** Start of the piece, in the listened address space (the listener adds `guestOffset`). */
  readonly addr: number;
  /** Length in bytes; a `direct` piece must be a whole number of pages. */
  readonly size: number;
  /** Offset of the piece inside the range's region. */
  readonly offsetInRegion: number;
  /** `direct` becomes a memory slot; anything else (e.g. `trapped-mmap`) is left to exit. */
  readonly mapinfo: 'direct' | string;
}

/**
 * How a ram-device flat range splits into pieces KVM may map and pieces that must exit; undefined
 * leaves the range to the default (slotted whole when page-aligned, else trapped). A VMM with
 * vfio-pci devices passes lib/vmm's `vfioPciSlotClassifier`, which knows their BAR stacks.
 */
export type SlotClassifier = (r: FlatRange, pageSize: number) => readonly SlotPiece[] | undefined;

/** Options of {@link KvmMemoryListener}. */
export interface KvmMemoryListenerOptions {
  /**
   * Where a direct range that could not be slotted is reported (source `kvm`, kind `slot-trapped`:
   * no host address, or KVM refused it: no free slot, or a guest that placed a BAR over its own
   * RAM), once per distinct range. The range stays in the flat view, so the guest's accesses to it
   * exit and are dispatched; never thrown. Default: a sink of the listener's own.
   */
  guestErrors?: GuestErrorSink;
  /** Without `guestErrors`: the own sink's log (`null`: none). */
  log?: ((line: string) => void) | null;
  /** Without `guestErrors`: the own sink's minimum time between two summary lines, in milliseconds. */
  logIntervalMs?: number;
  /** Host page size: the granularity of slots (default 4096). */
  pageSize?: number;
  /** Added to a bus address to give the guest-physical address (default 0: identity). */
  guestOffset?: number;
  /** Splits ranges into slotted and trapped pieces (default: page-aligned ranges are slotted whole). */
  classify?: SlotClassifier;
  /**
   * Give KVM the slot changes on the libuv thread pool, in order ({@link Vm.queueSlotAdd}), rather
   * than on the calling thread: a commit returns before KVM has them, and `vm.slotChanges` says
   * when it does (a {@link VcpuSet} given it as `pending` holds the vCPU whose access made the
   * change until then, as QEMU's commit does under its big lock, and leaves the event loop free).
   * A slot KVM refuses is reported as a trapped range when the refusal comes. Default false.
   */
  queue?: boolean;
}

/**
 * Mirrors an address space's `direct` ranges into KVM memory slots, as QEMU's kvm memory listener
 * does for RAM and mmap'd BARs: a flat range is split by the classifier, and only its `direct`
 * pieces become slots; the other pieces never do, so the guest's accesses to them exit into
 * dispatch. A ram-device range the classifier leaves alone (guest RAM) is slotted whole when it is
 * page-aligned and its memory has a host address. lib/kvm knows nothing of PCI: the classifier for
 * vfio-pci BAR stacks is lib/vmm's.
 *
 * It follows the flat view: a BAR that moves, a decode bit that toggles, a sub-page BAR that
 * expands, a device whose BARs are unmapped in D3hot all reach it as regionDel/regionAdd, and the
 * slots change with them. Slots are removed before any are added within one commit, so a BAR that
 * moves never overlaps itself.
 */
export class KvmMemoryListener implements MemoryListener {
  readonly #vm: SlotTarget;
  readonly #page: number;
  readonly #offset: number;
  readonly #classify: SlotClassifier;
  #errorCount = 0;
  /** Where ranges left trapped are reported. */
  readonly guestErrors: GuestErrorSink;
  readonly #slots = new Map<FlatRange, MemorySlot[]>();
  /** `name addr size` of each range reported trapped. */
  readonly #reported = new Set<string>();
  #pendingAdds: FlatRange[] = [];
  readonly #queue: boolean;

  constructor(vm: SlotTarget, opts: KvmMemoryListenerOptions = {}) {
    this.#queue = opts.queue === true;
    if (this.#queue && (typeof vm.queueSlotAdd !== 'function' || typeof vm.queueSlotRemoval !== 'function'))
      throw new ArgTypeError(
        'KvmMemoryListener: queue needs a target with queueSlotAdd and queueSlotRemoval',
      );
    this.#vm = vm;
    this.#page = opts.pageSize ?? 4096;
    this.#offset = opts.guestOffset ?? 0;
    this.guestErrors = sinkOf(opts);
    this.#classify = opts.classify ?? (() => undefined);
  }

  /**
   * Times a direct range could not be slotted since the listener was created (each try counts; the
   * sink hears each distinct range once).
   */
  get errorCount(): number {
    return this.#errorCount;
  }

  #trapped(where: { addr: number; size: number; name: string }, e: unknown): void {
    // Once per distinct range: a guest that toggles decode over it is refused the same way each time.
    const key = `${where.name} ${where.addr} ${where.size}`;
    if (this.#reported.has(key)) return;
    this.#reported.add(key);
    const why = e instanceof Error ? e.message.split('\n')[0] : String(e);
    this.guestErrors.report({
      source: 'kvm',
      kind: 'slot-trapped',
      where: where.name,
      address: where.addr,
      size: where.size,
      action: 'trapped',
      message: `${where.name} at 0x${where.addr.toString(16)}+0x${where.size.toString(16)} stays trapped: ${why}`,
      hint:
        'KVM would not take it as a memory slot: no free slot, or a BAR the guest placed over a range ' +
        'KVM already maps (its RAM, which then answers there); elsewhere its accesses exit instead',
      error: e,
      detail: where,
    });
  }

  /** The slots this listener holds, by guest address. */
  get slots(): MemorySlot[] {
    return [...this.#slots.values()].flat().sort((a, b) => a.guestAddress - b.guestAddress);
  }

  begin(): void {
    this.#pendingAdds = [];
  }

  regionDel(r: FlatRange): void {
    const slots = this.#slots.get(r);
    if (slots === undefined) {
      this.#pendingAdds = this.#pendingAdds.filter((x) => x !== r);
      return;
    }
    this.#slots.delete(r);
    for (const s of slots) {
      if (!this.#queue) this.#vm.removeSlot(s);
      // A removal KVM refuses leaves nothing to do here: the range is gone from the flat view.
      else this.#vm.queueSlotRemoval!(s).catch(() => undefined);
    }
  }

  regionAdd(r: FlatRange): void {
    this.#pendingAdds.push(r);
  }

  commit(): void {
    const adds = this.#pendingAdds;
    this.#pendingAdds = [];
    for (const r of adds) this.#add(r);
  }

  #add(r: FlatRange): void {
    if (r.kind !== 'ram-device') return;
    const memory = r.region.memory;
    const pieces = this.#classify(r, this.#page) ?? [
      { addr: r.addr, size: r.size, offsetInRegion: r.offsetInRegion, mapinfo: this.#plainMapinfo(r) },
    ];
    const made: MemorySlot[] = [];
    for (const p of pieces) {
      if (p.mapinfo !== 'direct') continue;
      const where = { addr: p.addr, size: p.size, name: r.region.name };
      if (!isHostMemory(memory)) {
        this.#trapped(where, new ArgTypeError(`${r.region.name}: its memory is not a Mapping or GuestRam`));
        continue;
      }
      const spec = {
        guestAddress: p.addr + this.#offset,
        size: p.size,
        memory,
        offset: p.offsetInRegion,
        readonly: r.readonly,
        name: r.region.name,
      };
      try {
        if (!this.#queue) {
          made.push(this.#vm.addSlot(spec));
          continue;
        }
        const { slot, done } = this.#vm.queueSlotAdd!(spec);
        made.push(slot);
        done.catch((e: unknown) => this.#refused(r, slot, where, e));
      } catch (e) {
        this.#errorCount++;
        this.#trapped(where, e);
      }
    }
    if (made.length > 0) this.#slots.set(r, made);
  }

  /** A queued slot KVM refused: no longer the range's; its accesses exit. */
  #refused(
    r: FlatRange,
    slot: MemorySlot,
    where: { addr: number; size: number; name: string },
    e: unknown,
  ): void {
    const held = this.#slots.get(r);
    if (held !== undefined) {
      const rest = held.filter((s) => s !== slot);
      if (rest.length > 0) this.#slots.set(r, rest);
      else this.#slots.delete(r);
    }
    this.#errorCount++;
    this.#trapped(where, e);
  }

  #plainMapinfo(r: FlatRange): 'direct' | 'trapped-mmap' {
    const aligned =
      r.addr % this.#page === 0 && r.size % this.#page === 0 && r.offsetInRegion % this.#page === 0;
    return aligned ? 'direct' : 'trapped-mmap';
  }
}
