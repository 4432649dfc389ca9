import type { ExitSpace, ExitTable, ExitTableEntry } from '../kvm';
import type { FlatRange, MemoryListener } from '../memory';
import { isPciRegionTag } from '../pci';
import { DMA_HANDLE, Device, Mapping } from '../vfio';
import { vcpuServedOf } from './vcpu-served';

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
  // The ranges of regions whose models let registers go (vcpu-served.ts), and how to stop
  // watching them.
  readonly #watched = new Map<FlatRange, () => void>();
  #dirty = false;

  constructor(table: ExitTable, space: ExitSpace, device: VfioDeviceLookup) {
    this.#table = table;
    this.#space = space;
    this.#device = device;
  }

  regionAdd(r: FlatRange): void {
    this.#ranges.add(r);
    this.#dirty = true;
    const served = vcpuServedOf(r.region);
    // A change of what the model lets go is published at once: before the access that made it
    // is answered, so no vCPU serves a register the model has taken back.
    if (served !== undefined)
      this.#watched.set(
        r,
        served.watch(() => this.#refresh()),
      );
  }

  regionDel(r: FlatRange): void {
    this.#dirty = this.#ranges.delete(r) || this.#dirty;
    this.#watched.get(r)?.();
    this.#watched.delete(r);
  }

  commit(): void {
    if (!this.#dirty || this.#table.closed) return;
    this.#dirty = false;
    const entries: ExitTableEntry[] = [];
    for (const r of [...this.#ranges].sort((a, b) => a.addr - b.addr)) {
      const e = exitEntryOf(r, this.#device);
      if (e !== null) entries.push(e);
      else if (this.#watched.has(r)) servedEntries(r, entries);
    }
    this.#table.set(this.#space, entries);
  }

  /** Empty the space (when the listener is removed). */
  clear(): void {
    this.#ranges.clear();
    for (const stop of this.#watched.values()) stop();
    this.#watched.clear();
    if (!this.#table.closed) this.#table.set(this.#space, []);
  }

  #refresh(): void {
    this.#dirty = true;
    this.commit();
  }
}

/** The registers `r`'s model lets the vCPU threads serve, where `r` puts them, onto `out`. */
function servedEntries(r: FlatRange, out: ExitTableEntry[]): void {
  const served = vcpuServedOf(r.region);
  if (served === undefined) return;
  for (const e of served.entries()) {
    // Only what this piece of the region shows (a region may be partly covered).
    if (e.offset < r.offsetInRegion || e.offset + e.size > r.offsetInRegion + r.size) continue;
    const start = r.addr + (e.offset - r.offsetInRegion);
    out.push(
      e.kind === 'const'
        ? { start, size: e.size, kind: 'const', value: e.value }
        : { start, size: e.size, kind: 'sink', sink: e.sink },
    );
  }
}
