/**
 * The BAR region stack, as QEMU's hw/vfio builds it for vfio-pci: for every BAR a
 * `"<BDF> base BAR n"` window (base-bar.ts) holding the fd-backed `"<BDF> BAR n"` region (one
 * pread/pwrite per access), which holds one `"<BDF> BAR n mmaps[i]"` ram-device region per mmap
 * area. A sub-page BAR whose whole page is mapped is expanded to the page wherever the guest places
 * it page-aligned, so that KVM can map it.
 */
import { ArgRangeError } from '../base/error';
import { type AccessSize, MemoryRegion, type MemoryRegionOps } from '../memory';
import type { RegionInfo } from '../vfio';
import { type BarMmap, type BarType, decodeBarRegister, type PciBar } from './bar';
import { baseBarRegion } from './base-bar';
import type { SystemAddressSpaces } from './system-address-spaces';
import { PCI_BASE_ADDRESS_0, PCI_NUM_BARS } from './constants';
import { VFIO_PCI_CONFIG_REGION_INDEX } from '../vfio/uapi';
import { type DeviceReporter, isVfioError } from './report';
import { hex, type PciRegionRole, type PciRegionTag, type VfioDeviceLike } from './types';

/** Every BAR container goes into the PCI space at priority 1, as pci_update_mappings does. */
export const BAR_PRIORITY = 1;
/** An expanded sub-page BAR drops to 0 so it cannot hide a BAR sharing its page. */
const SUBPAGE_PRIORITY = 0;

/**
 * A device's VFIO regions as guest accesses reach them: one pread/pwrite per access. A VFIO failure
 * (e.g. EIO while the guest keeps the device in D3hot) reads as all-ones and drops the write, and is
 * reported, as QEMU's vfio_region_read/write do; any other error is a bug and propagates. @internal
 */
export class RegionIo {
  constructor(
    readonly bdf: string,
    readonly device: VfioDeviceLike,
    readonly reporter: DeviceReporter,
  ) {}

  /** One pread on region `index` for a guest access; `where` names it in a report. */
  read(index: number, where: string, offset: number, size: AccessSize): number | bigint {
    try {
      return this.device.read(index, offset, size);
    } catch (e) {
      if (!isVfioError(e)) throw e;
      this.reporter.report({
        bdf: this.bdf,
        reason: 'fd-error',
        isWrite: false,
        where,
        offset,
        size,
        error: e,
      });
      return size === 8 ? 0xffff_ffff_ffff_ffffn : 2 ** (size * 8) - 1;
    }
  }

  /** One pwrite on region `index` for a guest access; a VFIO failure drops the write. */
  write(index: number, where: string, offset: number, size: AccessSize, value: number | bigint): void {
    try {
      this.device.write(index, offset, size, value);
    } catch (e) {
      if (!isVfioError(e)) throw e;
      this.reporter.report({
        bdf: this.bdf,
        reason: 'fd-error',
        isWrite: true,
        where,
        offset,
        size,
        error: e,
      });
    }
  }

  /** One read of the device's own configuration space, past the emulation; failures propagate. */
  phys(offset: number, size: 1 | 2 | 4): number {
    return Number(this.device.read(VFIO_PCI_CONFIG_REGION_INDEX, offset, size));
  }

  /** The tag of a region this device creates in BAR `bar` (6 for the ROM). */
  tag(bar: number, role: PciRegionRole, barOffset: number, min: AccessSize, max: AccessSize): PciRegionTag {
    return { owner: 'vfio-pci', bdf: this.bdf, bar, role, minAccess: min, maxAccess: max, barOffset };
  }
}

/** A BAR as the PCI layer builds and places it (the ROM too, in slot 6). @internal */
export class BarState implements PciBar {
  address: number | null = null;
  expanded = false;
  mmaps: BarMmap[] = [];
  quirks: string[] = [];
  mmapError: Error | null = null;
  expandable = false;
  region: MemoryRegion | null = null;
  base!: MemoryRegion;

  constructor(
    readonly index: number,
    readonly type: BarType,
    readonly prefetchable: boolean,
    public size: number,
    readonly regionSize: number,
    readonly typeBits: number,
  ) {}
}

/** One area of a BAR the kernel lets us mmap. @internal */
export interface MmapArea {
  offset: number;
  size: number;
}

/** What the kernel says of the six BARs. @internal */
export interface FoundBars {
  /** Null for an unimplemented BAR or the upper half of a 64-bit one. */
  readonly bars: (BarState | null)[];
  readonly infos: RegionInfo[];
  /** The mmap areas of each BAR (none for I/O BARs, unmappable regions, or with `noMmap`). */
  readonly areas: MmapArea[][];
}

/** findBars: the BARs' regions, types and mmap areas; nothing is mapped yet. @internal */
export function findBars(io: RegionIo, noMmap: boolean): FoundBars {
  const bars: (BarState | null)[] = [];
  const infos: RegionInfo[] = [];
  const areas: MmapArea[][] = [];
  for (let i = 0; i < PCI_NUM_BARS; i++) {
    const info = io.device.regionInfo(i);
    infos.push(info);
    areas.push([]);
    if (info.size === 0) {
      bars.push(null);
      continue;
    }
    const d = decodeBarRegister(io.phys(PCI_BASE_ADDRESS_0 + 4 * i, 4));
    bars.push(new BarState(i, d.type, d.prefetchable, info.size, info.size, d.typeBits));
    if (!noMmap && info.mappable && d.type !== 'io') areas[i] = mmapAreas(io.bdf, info);
  }
  return { bars, infos, areas };
}

function mmapAreas(bdf: string, info: RegionInfo): MmapArea[] {
  const sparse = info.caps.find((c) => c.kind === 'sparse-mmap');
  const list = sparse && sparse.kind === 'sparse-mmap' ? sparse.areas : [{ offset: 0, size: info.size }];
  const out: MmapArea[] = [];
  for (const a of list) {
    if (a.size === 0) continue;
    if (a.offset < 0 || a.offset + a.size > info.size) {
      throw new ArgRangeError(
        `${bdf} BAR ${info.index}: sparse mmap area ${hex(a.offset)}+${hex(a.size)} exceeds the region (${hex(info.size)} bytes)`,
      );
    }
    out.push({ offset: a.offset, size: a.size });
  }
  return out;
}

/**
 * buildBarStack: the base window, the fd-backed region and the mmaps of `bar`. A failed mmap leaves
 * the whole BAR on the fd path, as QEMU does, with the error in `bar.mmapError`. @internal
 */
export function buildBarStack(io: RegionIo, bar: BarState, areas: MmapArea[], pageSize: number): void {
  const i = bar.index;
  const baseName = `${io.bdf} base BAR ${i}`;
  bar.base = baseBarRegion(baseName, bar.size, (offset, size, isWrite) =>
    io.reporter.report({ bdf: io.bdf, reason: 'unbacked', isWrite, where: baseName, offset, size }),
  );
  bar.base.tag = io.tag(i, 'base', 0, 1, 8);
  if (bar.regionSize === 0) return;
  const region = MemoryRegion.io(`${io.bdf} BAR ${i}`, bar.regionSize, fdOps(io, i));
  region.tag = io.tag(i, 'bar', 0, 1, 8);
  bar.region = region;
  bar.base.addSubregion(region, 0, 0);
  const mmaps: BarMmap[] = [];
  try {
    for (const [j, a] of areas.entries()) {
      // A whole-BAR mmap of a sub-page BAR covers the full page so the BAR can later be expanded.
      const wantPage = areas.length === 1 && a.offset === 0 && a.size === bar.regionSize && a.size < pageSize;
      const memory = wantPage ? mapPage(io.device, i, a.size, pageSize) : io.device.map(i, a.offset, a.size);
      const mr = MemoryRegion.ramDevice(`${io.bdf} BAR ${i} mmaps[${j}]`, a.size, memory);
      mr.tag = io.tag(i, 'mmap', a.offset, 1, 8);
      mmaps.push({ index: j, offset: a.offset, size: a.size, region: mr, memory });
    }
  } catch (e) {
    for (const m of mmaps) m.memory.close();
    bar.mmapError = e instanceof Error ? e : new Error(String(e));
    return;
  }
  for (const m of mmaps) region.addSubregion(m.region, m.offset, 0);
  bar.mmaps = mmaps;
  bar.expandable = mmaps.length === 1 && bar.regionSize < pageSize && mmaps[0].memory.length >= pageSize;
}

function fdOps(io: RegionIo, index: number): MemoryRegionOps {
  const where = `${io.bdf} BAR ${index}`;
  const access = { minAccessSize: 1 as AccessSize, maxAccessSize: 8 as AccessSize, unaligned: false };
  return {
    read: (o, s) => io.read(index, where, o, s),
    write: (o, s, v) => io.write(index, where, o, s, v),
    valid: access,
    impl: access,
  };
}

/**
 * Maps a whole page for a sub-page BAR: the kernel reserves the rest of the page when it allows
 * mmap of such a BAR. When the page cannot be mapped (the backend refuses the length, or the kernel
 * refuses the mmap), the BAR is mapped at its size and simply never expands (`PciBar.expandable`).
 */
function mapPage(device: VfioDeviceLike, index: number, size: number, pageSize: number): BarMmap['memory'] {
  try {
    return device.map(index, 0, pageSize);
  } catch (e) {
    if (!(e instanceof RangeError || (e instanceof Error && 'code' in e))) throw e;
    return device.map(index, 0, size);
  }
}

/** Unmaps every mmap of `bars`. @internal */
export function closeMmaps(bars: readonly (BarState | null)[]): void {
  for (const bar of bars) for (const m of bar?.mmaps ?? []) m.memory.close();
}

/**
 * subPageUpdate: a sub-page BAR the guest just placed at a page-aligned address is expanded to the
 * page so KVM can map it; the container drops to priority 0 so it cannot hide another BAR sharing
 * the page. Anywhere else the real size comes back. @internal
 */
export function subPageUpdate(bar: BarState, bus: SystemAddressSpaces): void {
  const page = bus.pageSize;
  const m = bar.mmaps;
  if (m.length !== 1 || m[0].offset !== 0 || m[0].size !== bar.regionSize || bar.size !== bar.regionSize)
    return;
  if (!bar.expandable || !bar.region) return;
  const size = bar.address !== null && bar.address % page === 0 ? page : bar.regionSize;
  bar.base.setSize(size);
  bar.region.setSize(size);
  m[0].region.setSize(size);
  bar.expanded = size !== bar.regionSize;
  if (bar.address === null) return;
  const prio = bar.expanded ? SUBPAGE_PRIORITY : BAR_PRIORITY;
  if (bar.base.priority !== prio) {
    const root = bus.memory.root;
    root.removeSubregion(bar.base);
    root.addSubregion(bar.base, bar.address, prio);
  }
}
