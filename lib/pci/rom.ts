/**
 * The expansion ROM: the `"vfio[<BDF>].rom"` region, read through the device fd and never written,
 * placed where the guest's ROM register says (bar-map.ts) while its enable bit and memory decode are on.
 */
import { VFIO_PCI_ROM_REGION_INDEX } from '../vfio/uapi';
import { type AccessSize, MemoryRegion } from '../memory';
import type { RegionInfo } from '../vfio';
import { BarState, type RegionIo } from './region';

/** Where BARs are numbered (dump, region tags, mapinfo), the ROM is BAR 6, its VFIO region index. */
export const ROM_SLOT = VFIO_PCI_ROM_REGION_INDEX;

/** The expansion ROM as the guest sees it. */
export interface PciRom {
  /** Size of the ROM region in bytes, as sizing reports it to the guest. */
  readonly size: number;
  /** PCI memory address, or null unless the ROM enable bit and memory decode are on. */
  readonly address: number | null;
  /** The "vfio[<BDF>].rom" region, read through the fd. */
  readonly region: MemoryRegion;
}

/** romBar: the ROM as a BAR in slot 6, or null when the device has none. @internal */
export function romBar(io: RegionIo): BarState | null {
  let info: RegionInfo;
  try {
    info = io.device.regionInfo(VFIO_PCI_ROM_REGION_INDEX);
  } catch (e) {
    // Devices without a ROM region may refuse the query outright; anything else is a real failure.
    if (e instanceof Error && 'code' in e && (e as { code: unknown }).code === 'EINVAL') return null;
    throw e;
  }
  if (info.size === 0) return null;
  const rom = new BarState(ROM_SLOT, 'mem32', false, info.size, info.size, 0);
  const access = { minAccessSize: 1 as AccessSize, maxAccessSize: 4 as AccessSize, unaligned: false };
  const name = `vfio[${io.bdf}].rom`;
  rom.base = MemoryRegion.io(name, info.size, {
    read: (o, s) => io.read(VFIO_PCI_ROM_REGION_INDEX, name, o, s),
    // The ROM is read-only: writes are dropped, as a real ROM drops them.
    write: () => undefined,
    valid: access,
    impl: access,
  });
  rom.base.tag = io.tag(ROM_SLOT, 'rom', 0, 1, 4);
  return rom;
}
