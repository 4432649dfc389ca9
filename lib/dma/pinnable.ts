import * as fs from 'node:fs';
import { VfioError } from '../base/error';

const MiB = 2 ** 20;

/** What {@link assertPinnable} needs of guest RAM. */
export interface PinnableRam {
  /** The RAM's name, for the message. */
  readonly name: string;
  /** The RAM's size in bytes: what pinning would allocate on small pages. */
  readonly length: number;
  /** 0 for small pages: only those are allocated (and must be available) when pinned. */
  readonly hugePageSize: number;
}

/**
 * assertPinnable: refuse, before the IOMMU pins it (`op`: VFIO_IOMMU_MAP_DMA, IOMMU_IOAS_MAP), guest RAM the host cannot give: on
 * small pages, pinning allocates every page at once, and more than MemAvailable gets the process
 * OOM-killed (root passes RLIMIT_MEMLOCK) after seconds of reclaim. Huge-page RAM was reserved
 * from its pool when it was created. A host whose /proc/meminfo cannot be read is not judged.
 * @throws VfioError ENOMEM naming both sizes, with a hint
 */
export function assertPinnable(ram: PinnableRam, meminfo = '/proc/meminfo', op = 'VFIO_IOMMU_MAP_DMA'): void {
  if (ram.hugePageSize !== 0) return;
  let text: string;
  try {
    text = fs.readFileSync(meminfo, 'utf8');
  } catch {
    return;
  }
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(text);
  if (m === null) return;
  const available = Number(m[1]) * 1024;
  if (ram.length <= available) return;
  throw new VfioError({
    message: `guest RAM '${ram.name}' of ${Math.round(ram.length / MiB)} MiB cannot be pinned for DMA: the host has ${Math.floor(available / MiB)} MiB available (MemAvailable)`,
    code: 'ENOMEM',
    errno: 12,
    op,
    path: meminfo,
    hint: 'give the guest less RAM (ramSize), free memory on the host, or back guest RAM with reserved huge pages (hugepages)',
  });
}
