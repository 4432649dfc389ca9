import type { ExitSpace, ExitTable, ExitTableEntry } from '../kvm';
import type { FlatRange, MemoryListener } from '../memory';
import { isPciRegionTag } from '../pci';
import { DMA_HANDLE, Device, Mapping } from '../vfio';

/** Finds the VFIO device behind a vfio-pci region's BDF (null: not one of ours). */
export type VfioDeviceLookup = (bdf: string) => Device | null;

/**
 * exitEntryOf: the exit-table entry a vCPU thread serves `r` from, or null when accesses to it need
 * JavaScript. A range served by a mapping of a device region (a BAR's mmap: trapped-mmap, sub-page
 * BARs included, and direct pieces that KVM could not slot) is one fixed-width access on the
 * mapping; a vfio-pci BAR region without a mapping (trapped-fd) is one pread/pwrite on the device
 * fd at the region's offset. Everything emulated (MSI-X table, quirks, the base BAR, the UART, the
 * host bridge, RAM) stays with JavaScript.
 */
export function exitEntryOf(r: FlatRange, device: VfioDeviceLookup): ExitTableEntry | null {
  const region = r.region;
  if (r.kind === 'ram-device') {
    const memory = region.memory;
    if (!(memory instanceof Mapping) || memory.closed) return null;
    return {
      start: r.addr,
      size: r.size,
      kind: 'mmap',
      mapping: memory[DMA_HANDLE](),
      offset: r.offsetInRegion,
      readonly: r.readonly,
    };
  }
  const tag = region.tag;
  if (r.kind !== 'io' || !isPciRegionTag(tag) || tag.role !== 'bar' || r.readonly) return null;
  const dev = device(tag.bdf);
  if (dev === null || dev.closed) return null;
  return {
    start: r.addr,
    size: r.size,
    kind: 'fd',
    fd: dev._handle,
    offset: dev.regionInfo(tag.bar).offset + r.offsetInRegion,
  };
}

/**
 * Publishes an address space's natively servable ranges to one space of an {@link ExitTable}, as
 * the KVM memory listener publishes slots: the flat view stays the one source of routing truth.
 * Each commit replaces the space's list whole, so a BAR move or a decode toggle reaches the vCPU
 * threads as one change, and a range removed is never accessed once the commit has returned.
 */
export class ExitTableListener implements MemoryListener {
  readonly #table: ExitTable;
  readonly #space: ExitSpace;
  readonly #device: VfioDeviceLookup;
  readonly #ranges = new Set<FlatRange>();
  #dirty = false;

  constructor(table: ExitTable, space: ExitSpace, device: VfioDeviceLookup) {
    this.#table = table;
    this.#space = space;
    this.#device = device;
  }

  regionAdd(r: FlatRange): void {
    this.#ranges.add(r);
    this.#dirty = true;
  }

  regionDel(r: FlatRange): void {
    this.#dirty = this.#ranges.delete(r) || this.#dirty;
  }

  commit(): void {
    if (!this.#dirty || this.#table.closed) return;
    this.#dirty = false;
    const entries: ExitTableEntry[] = [];
    for (const r of [...this.#ranges].sort((a, b) => a.addr - b.addr)) {
      const e = exitEntryOf(r, this.#device);
      if (e !== null) entries.push(e);
    }
    this.#table.set(this.#space, entries);
  }

  /** Empty the space (when the listener is removed). */
  clear(): void {
    this.#ranges.clear();
    if (!this.#table.closed) this.#table.set(this.#space, []);
  }
}
