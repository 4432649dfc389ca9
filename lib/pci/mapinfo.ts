import type { FlatRange } from '../memory';
import { DEFAULT_PAGE_SIZE } from './constants';
import { isPciRegionTag, type MapInfo, type PciRegionTag } from './types';

/** A piece of a flat range with a single way of being served. */
export interface MapInfoPiece {
  /** Address of the piece's start, in the flat range's address space. */
  readonly addr: number;
  /** Length in bytes. */
  readonly size: number;
  /** Offset of the piece inside the region serving it. */
  readonly offsetInRegion: number;
  /** How accesses to the piece are served. */
  readonly mapinfo: MapInfo;
}

/**
 * classifyRange: how accesses to flat range `r` are served, or undefined when the range does not
 * belong to a vfio-pci device.
 *
 * An mmap-backed flat range is split at page boundaries, as KVM's memory listener splits it: the
 * page-aligned middle is `direct`, a sub-page head or tail is `trapped-mmap`. A range whose guest
 * address and host mapping offset are not congruent modulo the page is trapped as a whole.
 */
export function classifyRange(r: FlatRange, pageSize = DEFAULT_PAGE_SIZE): MapInfoPiece[] | undefined {
  const tag = r.region.tag;
  if (!isPciRegionTag(tag)) return undefined;
  return classifyPieces(tag, r.addr, r.size, r.offsetInRegion, pageSize);
}

/** classifyPieces: {@link classifyRange} given the region's tag and the range geometry. */
export function classifyPieces(
  tag: PciRegionTag,
  addr: number,
  size: number,
  offsetInRegion: number,
  pageSize = DEFAULT_PAGE_SIZE,
): MapInfoPiece[] {
  const whole = (mapinfo: MapInfo): MapInfoPiece[] => [{ addr, size, offsetInRegion, mapinfo }];
  switch (tag.role) {
    case 'bar':
    case 'rom':
      return whole('trapped-fd');
    case 'base':
    case 'msix-table':
    case 'msix-pba':
    case 'quirk':
      return whole('emulated');
    case 'mmap':
      break;
  }
  const hostOffset = tag.barOffset + offsetInRegion;
  if ((addr - hostOffset) % pageSize !== 0) return whole('trapped-mmap');
  const end = addr + size;
  const first = Math.min(end, Math.ceil(addr / pageSize) * pageSize);
  const last = Math.max(first, Math.floor(end / pageSize) * pageSize);
  const out: MapInfoPiece[] = [];
  const push = (a: number, b: number, mapinfo: MapInfo): void => {
    if (b > a) out.push({ addr: a, size: b - a, offsetInRegion: offsetInRegion + (a - addr), mapinfo });
  };
  push(addr, first, 'trapped-mmap');
  push(first, last, 'direct');
  push(last, end, 'trapped-mmap');
  return out;
}

/** The mtree column text for a flat range: its class, or each piece's class and span when split. */
export function mapinfoColumn(pieces: readonly MapInfoPiece[] | undefined): string | undefined {
  if (!pieces || pieces.length === 0) return undefined;
  if (pieces.length === 1) return pieces[0].mapinfo;
  return pieces
    .map((p) => `${p.mapinfo} ${p.addr.toString(16)}-${(p.addr + p.size - 1).toString(16)}`)
    .join(', ');
}
