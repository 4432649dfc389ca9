/**
 * Why the kernel refused a DMA map, per backend: the hints each backend's DmaHost gives the shared
 * record (dma.ts) for the kernel's common failures. type1 counts pinned pages in the process's
 * locked_vm and limits the number of mappings; iommufd counts them in the user's locked_vm by
 * default, has no entry limit, and cannot pin device memory (no peer-to-peer DMA into a BAR).
 */
import * as fs from 'node:fs';

import { memlockLimitText } from '../base/native-errors';
import type { DmaFailure } from './dma';

/** The vfio_iommu_type1 dma_entry_limit module parameter, as text. */
function readEntryLimit(): string {
  try {
    return fs.readFileSync('/sys/module/vfio_iommu_type1/parameters/dma_entry_limit', 'utf8').trim();
  } catch {
    return 'unreadable';
  }
}

/** type1's hint for `f`; `dmaAvail` reads VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL afresh. */
export function type1Hint(f: DmaFailure, dmaAvail: () => number | undefined): string | undefined {
  switch (f.code) {
    case 'ENOMEM':
      return (
        `this map needed ${f.mapping.size} bytes pinned, on top of the ${f.mappedBytes} bytes this container ` +
        `already maps; RLIMIT_MEMLOCK is ${memlockLimitText()}. Raise it (ulimit -l, LimitMEMLOCK=, ` +
        `/etc/security/limits.conf), or run with CAP_IPC_LOCK, which lifts the limit for pinning`
      );
    case 'ENOSPC':
      return (
        `the IOMMU has no DMA entries left (dma_avail ${dmaAvail() ?? 'unknown'}, ${f.mappingCount} ` +
        `mappings in this container); the vfio_iommu_type1 module parameter dma_entry_limit is ` +
        `${readEntryLimit()}: raise it (/sys/module/vfio_iommu_type1/parameters/dma_entry_limit, ` +
        `read when a container is opened) or use fewer, larger mappings`
      );
    case 'EINVAL':
      return (
        'the kernel refused the mapping: check the IOVA ranges (iommuInfo().iovaRanges), that the ' +
        "memory's host address is page-aligned, and that the container has an IOMMU type"
      );
    default:
      return undefined;
  }
}

/** iommufd's hint for `f` on the IOAS named `noun`. */
export function iommufdHint(f: DmaFailure, noun: string): string | undefined {
  switch (f.code) {
    case 'ENOMEM':
      return (
        `this map needed ${f.mapping.size} bytes pinned, on top of the ${f.mappedBytes} bytes this ${noun} ` +
        `already maps; iommufd counts pinned pages against RLIMIT_MEMLOCK per user (every process of ` +
        `this user together), and RLIMIT_MEMLOCK is ${memlockLimitText()}. Raise it (ulimit -l, ` +
        `LimitMEMLOCK=, /etc/security/limits.conf), or run with CAP_IPC_LOCK, which lifts the limit`
      );
    case 'EFAULT':
      return (
        'iommufd pins the pages of the memory it maps, and device memory (a BAR mapping: peer-to-peer ' +
        'DMA) has none to pin, so this kernel cannot map it through iommufd; map it on the type1 backend'
      );
    case 'EEXIST':
      return (
        'the kernel holds a mapping there that this record does not (mapped through another Ioas ' +
        'object on the same IOAS?): map through one Ioas per IOAS'
      );
    case 'EINVAL':
    case 'ERANGE':
      return (
        'the kernel refused the mapping: check the IOVA ranges (iommuInfo().iovaRanges, which narrow ' +
        "as devices attach) and that the memory's host address is page-aligned"
      );
    default:
      return undefined;
  }
}
