/**
 * MSI-X set-up (QEMU's vfio_msix_early_setup and vfio_msix_setup): the table and PBA found from the
 * capability, the table's page left out of the BAR's mmaps when the kernel requires it, the
 * structures moved to another BAR on request (x-msix-relocation), and the `msix-table`/`msix-pba`
 * overlays put in the base BAR window with the capability's control bits emulated.
 */
import { ArgRangeError, VfioError } from '../base/error';
import type { RegionInfo } from '../vfio';
import type { EmulatedConfig, PciCapability } from './config';
import {
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_CAP_ID_MSIX,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_BIRMASK,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
  PCI_NUM_BARS,
} from './constants';
import { Msix, type MsixLayout } from './msix';
import { BarState, type MmapArea } from './region';
import { hex } from './types';

/** Where MSI-X structures go: left in place, or moved to a BAR (QEMU's x-msix-relocation). */
export type MsixRelocation = 'off' | 'auto' | 'bar0' | 'bar1' | 'bar2' | 'bar3' | 'bar4' | 'bar5';

/**
 * Overlays inside the base container use QEMU's priority 0; they win over the BAR region (also 0)
 * because they are added after it, as in QEMU.
 */
const MSIX_PRIORITY = 0;

/** What MSI-X set-up reads and changes. @internal */
export interface MsixSetupContext {
  readonly bdf: string;
  /** The IDs the device presents, for the error of a relocation that cannot be automatic. */
  readonly vendorId: number;
  readonly deviceId: number;
  readonly pageSize: number;
  readonly capabilities: readonly PciCapability[];
  /** The BARs found so far; a relocation to an unimplemented BAR adds one. */
  readonly bars: (BarState | null)[];
  phys(offset: number, size: 1 | 2 | 4): number;
}

/** Where the MSI-X structures will be, decided before any BAR is built. @internal */
export interface MsixPlan {
  readonly layout: MsixLayout;
  readonly relocated: boolean;
}

/**
 * planMsix: finds MSI-X, trims the table's page out of `areas` (the BARs' mmap areas) when the
 * kernel does not report the table mappable, and relocates. Null without an MSI-X capability. @internal
 */
export function planMsix(
  ctx: MsixSetupContext,
  infos: readonly RegionInfo[],
  areas: MmapArea[][],
  relo: MsixRelocation,
): MsixPlan | null {
  const cap = ctx.capabilities.find((c) => !c.extended && c.id === PCI_CAP_ID_MSIX);
  if (!cap) return null;
  const ctrl = ctx.phys(cap.offset + PCI_MSIX_FLAGS, 2);
  const table = ctx.phys(cap.offset + PCI_MSIX_TABLE, 4) >>> 0;
  const pba = ctx.phys(cap.offset + PCI_MSIX_PBA, 4) >>> 0;
  const l = {
    capOffset: cap.offset,
    entries: (ctrl & PCI_MSIX_FLAGS_QSIZE) + 1,
    tableBar: table & PCI_MSIX_FLAGS_BIRMASK,
    tableOffset: table & ~PCI_MSIX_FLAGS_BIRMASK,
    pbaBar: pba & PCI_MSIX_FLAGS_BIRMASK,
    pbaOffset: pba & ~PCI_MSIX_FLAGS_BIRMASK,
  };
  const tableInfo = ctx.bars[l.tableBar];
  const pbaInfo = ctx.bars[l.pbaBar];
  if (
    l.tableBar >= PCI_NUM_BARS ||
    !tableInfo ||
    l.tableOffset + l.entries * PCI_MSIX_ENTRY_SIZE > tableInfo.regionSize
  ) {
    throw new ArgRangeError(
      `${ctx.bdf}: MSI-X table (BAR ${l.tableBar} offset ${hex(l.tableOffset)}, ${l.entries} entries) lies outside the device's BARs`,
    );
  }
  if ((l.pbaBar >= PCI_NUM_BARS || !pbaInfo || l.pbaOffset >= pbaInfo.regionSize) && relo === 'off') {
    throw new ArgRangeError(
      `${ctx.bdf}: MSI-X PBA (BAR ${l.pbaBar} offset ${hex(l.pbaOffset)}) lies outside the device's BARs`,
    );
  }
  if (!infos[l.tableBar].caps.some((c) => c.kind === 'msix-mappable')) {
    trimMsixPage(areas[l.tableBar], l.tableOffset, l.entries, tableInfo.regionSize, ctx.pageSize);
  }
  if (relo === 'off') return { layout: l, relocated: false };
  return { layout: relocateMsix(ctx, l, relo), relocated: true };
}

/** Leaves the host pages holding the MSI-X table out of a whole-BAR mmap (QEMU's fixup). */
function trimMsixPage(
  areas: MmapArea[],
  tableOffset: number,
  entries: number,
  size: number,
  page: number,
): void {
  if (areas.length !== 1 || areas[0].offset !== 0 || areas[0].size !== size) return;
  const start = Math.floor(tableOffset / page) * page;
  const end = Math.ceil((tableOffset + entries * PCI_MSIX_ENTRY_SIZE) / page) * page;
  if (start === 0) {
    if (end >= size) areas.length = 0;
    else areas[0] = { offset: end, size: size - end };
  } else if (end >= size) {
    areas[0] = { offset: 0, size: start };
  } else {
    areas[0] = { offset: 0, size: start };
    areas.push({ offset: end, size: size - end });
  }
}

function relocateMsix(ctx: MsixSetupContext, l: MsixLayout, relo: MsixRelocation): MsixLayout {
  const bdf = ctx.bdf;
  if (relo === 'auto') {
    // QEMU has no table of devices known to work with a given BAR, so 'auto' relocates nothing.
    throw new VfioError({
      message: `${bdf}: no automatic MSI-X relocation available for device ${hex(ctx.vendorId)}:${hex(ctx.deviceId)}`,
      code: 'ENORELOCATION',
      op: 'VfioPciDevice.open',
      bdf,
      hint: "name the BAR to move the MSI-X table to (msixRelocation: 'bar0' ... 'bar5'), or leave it 'off'",
    });
  }
  if (!/^bar[0-5]$/.test(relo)) throw new ArgRangeError(`${bdf}: invalid MSI-X relocation ${String(relo)}`);
  const target = Number(relo.slice(3));
  const tableBytes = l.entries * PCI_MSIX_ENTRY_SIZE;
  let msixSize = tableBytes + Math.ceil(l.entries / 64) * 8;
  msixSize = Math.ceil(msixSize / ctx.pageSize) * ctx.pageSize;
  msixSize = 2 ** Math.ceil(Math.log2(msixSize));
  const bar = ctx.bars[target];
  const prev = target > 0 ? ctx.bars[target - 1] : null;
  if (bar?.type === 'io')
    throw new ArgRangeError(`${bdf}: invalid MSI-X relocation BAR ${target}, I/O port BAR`);
  if (!bar && prev?.type === 'mem64') {
    throw new ArgRangeError(
      `${bdf}: invalid MSI-X relocation BAR ${target}, consumed by 64-bit BAR ${target - 1}`,
    );
  }
  if (bar && bar.size > 2 ** 30 && bar.type !== 'mem64') {
    throw new ArgRangeError(`${bdf}: invalid MSI-X relocation BAR ${target}, no space to extend 32-bit BAR`);
  }
  let tableOffset: number;
  if (!bar) {
    // A new BAR: 64-bit when the next slot is free, prefetchable since the emulation has no read side effects.
    const mem64 = target < PCI_NUM_BARS - 1 && !ctx.bars[target + 1];
    const typeBits = (mem64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) | PCI_BASE_ADDRESS_MEM_PREFETCH;
    ctx.bars[target] = new BarState(target, mem64 ? 'mem64' : 'mem32', true, msixSize, 0, typeBits);
    tableOffset = 0;
  } else {
    bar.size = Math.max(bar.size * 2, msixSize * 2);
    // Half-way into a power-of-two BAR at least twice the MSI-X size is always its own page.
    tableOffset = bar.size / 2;
  }
  return { ...l, tableBar: target, pbaBar: target, tableOffset, pbaOffset: tableOffset + tableBytes };
}

/**
 * installMsix: the emulated table and PBA as overlays in their base BAR windows, and the capability's
 * enable and function-mask bits (and, when relocated, its table and PBA registers) emulated. @internal
 */
export function installMsix(
  bdf: string,
  bars: readonly (BarState | null)[],
  emu: EmulatedConfig,
  plan: MsixPlan,
): Msix {
  const l = plan.layout;
  const msix = new Msix(l, plan.relocated, bdf);
  const tableBar = bars[l.tableBar];
  const pbaBar = bars[l.pbaBar];
  if (!tableBar || !pbaBar) {
    throw new VfioError({
      message: `${bdf}: the MSI-X table or PBA BAR is not implemented`,
      code: 'EPROTO',
      op: 'VfioPciDevice.open',
      bdf,
    });
  }
  tableBar.base.addSubregion(msix.tableRegion, l.tableOffset, MSIX_PRIORITY);
  pbaBar.base.addSubregion(msix.pbaRegion, l.pbaOffset, MSIX_PRIORITY);
  const bits = BigInt(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  emu.emulate(l.capOffset + PCI_MSIX_FLAGS, 2, 0n, bits, bits);
  if (plan.relocated) {
    emu.emulate(l.capOffset + PCI_MSIX_TABLE, 4, BigInt(l.tableOffset | l.tableBar), 0xffff_ffffn, 0n);
    emu.emulate(l.capOffset + PCI_MSIX_PBA, 4, BigInt(l.pbaOffset | l.pbaBar), 0xffff_ffffn, 0n);
  }
  return msix;
}
