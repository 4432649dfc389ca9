import type { FlatRange } from '../memory';
import { DEFAULT_PAGE_SIZE } from './constants';
import { isPciRegionTag, type MapInfo, type PciRegionTag } from './types';

/**
 * classifyRange: how an access to flat range `r` is served, or undefined when the range does not
 * belong to a vfio-pci device.
 *
 * An mmap-backed range is `direct` only when its guest address, its size and its place in the host
 * mapping are all page-aligned, because that is what a KVM memory slot needs.
 */
export function classifyRange(r: FlatRange, pageSize = DEFAULT_PAGE_SIZE): MapInfo | undefined {
  const tag = r.region.tag;
  if (!isPciRegionTag(tag)) return undefined;
  return classifyTag(tag, r.addr, r.size, r.offsetInRegion, pageSize);
}

/** classifyTag: {@link classifyRange} given the region's tag and the range geometry. */
export function classifyTag(
  tag: PciRegionTag,
  addr: number,
  size: number,
  offsetInRegion: number,
  pageSize = DEFAULT_PAGE_SIZE,
): MapInfo {
  switch (tag.role) {
    case 'mmap': {
      const aligned =
        addr % pageSize === 0 && size % pageSize === 0 && (tag.barOffset + offsetInRegion) % pageSize === 0;
      return aligned && size > 0 ? 'direct' : 'trapped-mmap';
    }
    case 'bar':
    case 'rom':
    case 'base':
      return 'trapped-fd';
    case 'msix-table':
    case 'msix-pba':
    case 'quirk':
      return 'emulated';
  }
}
