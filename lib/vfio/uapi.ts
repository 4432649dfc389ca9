/**
 * The VFIO uAPI structures (linux/vfio.h) and their parsers. The addon returns the raw bytes of
 * each info ioctl, capability chain included; parsing them here keeps the C++ to syscalls and lets
 * the parsers be tested on synthetic buffers.
 */
import { VfioError } from '../base/native-errors';
import { viewOf } from '../base/values';

export const VFIO_API_VERSION = 0;
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_TYPE1v2_IOMMU = 3;

export const VFIO_GROUP_FLAGS_VIABLE = 1 << 0;
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;

export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;

export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;
export const VFIO_REGION_INFO_FLAG_CAPS = 1 << 3;
export const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;
export const VFIO_REGION_INFO_CAP_TYPE = 2;
export const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3;

export const VFIO_IRQ_INFO_EVENTFD = 1 << 0;
export const VFIO_IRQ_INFO_MASKABLE = 1 << 1;
export const VFIO_IRQ_INFO_AUTOMASKED = 1 << 2;
export const VFIO_IRQ_INFO_NORESIZE = 1 << 3;

export const VFIO_IOMMU_INFO_PGSIZES = 1 << 0;
export const VFIO_IOMMU_INFO_CAPS = 1 << 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
export const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;

/** PCI region indexes, as in linux/vfio.h. BARs 0..5 are indexes 0..5. */
export const VFIO_PCI_BAR0_REGION_INDEX = 0;
/** The region of BAR 1. */
export const VFIO_PCI_BAR1_REGION_INDEX = 1;
/** The region of BAR 2. */
export const VFIO_PCI_BAR2_REGION_INDEX = 2;
/** The region of BAR 3. */
export const VFIO_PCI_BAR3_REGION_INDEX = 3;
/** The region of BAR 4. */
export const VFIO_PCI_BAR4_REGION_INDEX = 4;
/** The region of BAR 5. */
export const VFIO_PCI_BAR5_REGION_INDEX = 5;
/** The expansion ROM (read-only). */
export const VFIO_PCI_ROM_REGION_INDEX = 6;
/** Configuration space, through the device fd only (never mappable). */
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
/** The legacy VGA ranges, on VGA devices whose driver offers them. */
export const VFIO_PCI_VGA_REGION_INDEX = 8;
/** How many fixed region indexes there are; device-specific regions follow. */
export const VFIO_PCI_NUM_REGIONS = 9;

/** PCI IRQ indexes, as in linux/vfio.h. */
export const VFIO_PCI_INTX_IRQ_INDEX = 0;
/** MSI: up to 32 vectors. */
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
/** MSI-X: up to 2048 vectors. */
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;
/** The AER error notification (one vector). */
export const VFIO_PCI_ERR_IRQ_INDEX = 3;
/** The kernel asking for the device back, e.g. before an unbind (one vector). */
export const VFIO_PCI_REQ_IRQ_INDEX = 4;

/** Result of VFIO_DEVICE_GET_INFO. */
export interface DeviceInfo {
  /** The kernel's VFIO_DEVICE_FLAGS_* bits as returned (PCI, RESET, CAPS, ...); `pci` and `reset` decode two. */
  flags: number;
  /** How many region indexes the device has (9 fixed ones for vfio-pci, then device-specific ones). */
  numRegions: number;
  /** How many IRQ indexes the device has (5 for vfio-pci: INTx, MSI, MSI-X, ERR, REQ). */
  numIrqs: number;
  /** A vfio-pci device. */
  pci: boolean;
  /** VFIO_DEVICE_RESET is supported. */
  reset: boolean;
}

/** One capability of a region. Unknown capabilities are kept, by id and version. */
export type RegionCap =
  | {
      /** VFIO_REGION_INFO_CAP_SPARSE_MMAP: only parts of the region may be mmapped. */
      kind: 'sparse-mmap';
      /** The parts that may be mmapped, each `size` bytes from `offset` bytes into the region. */
      areas: {
        /** Where the area starts, in bytes from the start of the region. */
        offset: number;
        /** The area's length in bytes. */
        size: number;
      }[];
    }
  | {
      /** VFIO_REGION_INFO_CAP_TYPE: a device-specific region says what it is. */
      kind: 'type';
      /** The region type (VFIO_REGION_TYPE_*: PCI vendor type, graphics, migration, ...). */
      type: number;
      /** The subtype within `type` (e.g. the OpRegion among Intel's vendor regions). */
      subtype: number;
    }
  | {
      /** VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: the MSI-X table's page may be mmapped as well. */
      kind: 'msix-mappable';
    }
  | {
      /** A capability this package does not decode, kept so that nothing is silently dropped. */
      kind: 'unknown';
      /** The capability ID from its header. */
      id: number;
      /** The capability version from its header. */
      version: number;
    };

/** Result of VFIO_DEVICE_GET_REGION_INFO. */
export interface RegionInfo {
  /** The region index asked for (0-5 the BARs, 6 the ROM, 7 config space, 8 VGA, then device-specific). */
  index: number;
  /** The kernel's VFIO_REGION_INFO_FLAG_* bits as returned; the three booleans below decode READ, WRITE and MMAP. */
  flags: number;
  /** The region can be read through the device fd (pread). */
  readable: boolean;
  /** The region can be written through the device fd (pwrite). */
  writable: boolean;
  /** The region (or, with a sparse-mmap capability, parts of it) can be mmapped. */
  mappable: boolean;
  /** The region's length in bytes; 0 for a region the device does not implement (an absent BAR). */
  size: number;
  /** Where the region starts in the device fd. */
  offset: number;
  /** The region's capabilities in chain order; empty when it has none. */
  caps: RegionCap[];
}

/** Result of VFIO_DEVICE_GET_IRQ_INFO. */
export interface IrqInfo {
  /** The IRQ index asked for (0 INTx, 1 MSI, 2 MSI-X, 3 ERR, 4 REQ for vfio-pci). */
  index: number;
  /** The kernel's VFIO_IRQ_INFO_* bits as returned; the four booleans below decode them. */
  flags: number;
  /** How many vectors the index has; 0 when the device does not offer it (no INTx pin, no MSI capability). */
  count: number;
  /** The index signals through eventfds (VFIO_IRQ_INFO_EVENTFD). */
  eventfd: boolean;
  /** The index can be masked and unmasked through VFIO_DEVICE_SET_IRQS (VFIO_IRQ_INFO_MASKABLE). */
  maskable: boolean;
  /** The kernel masks the interrupt each time it fires, and it stays masked until unmasked (INTx). */
  automasked: boolean;
  /** The vectors cannot be added to while enabled: enabling more means disabling first (VFIO_IRQ_INFO_NORESIZE). */
  noresize: boolean;
}

/** A range of IO virtual addresses, inclusive at both ends, as the kernel reports one (struct vfio_iova_range). */
export interface IovaRange {
  /** The first usable IOVA. */
  readonly start: bigint;
  /** The last usable IOVA (inclusive: a range that ends at the top of 64 bits ends at 2^64 - 1). */
  readonly end: bigint;
}

/** One capability of the type1 IOMMU. */
export type IommuCap =
  | {
      /** VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: where a DMA mapping may lie. */
      kind: 'iova-ranges';
      /** The usable IOVA ranges, inclusive at both ends, in the kernel's order. */
      ranges: IovaRange[];
    }
  | {
      /** VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: how many more mappings the container takes. */
      kind: 'dma-avail';
      /** DMA mappings the container may still create (the kernel's dma_entry_limit less those in use). */
      avail: number;
    }
  | {
      /** VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: type1's dirty page tracking. */
      kind: 'migration';
      /** The capability's flags as returned (none are defined yet). */
      flags: number;
      /** The page sizes, as a bitmap, in which dirty pages are reported. */
      pgsizeBitmap: bigint;
      /** The largest dirty bitmap, in bytes, one VFIO_IOMMU_DIRTY_PAGES call returns. */
      maxDirtyBitmapSize: bigint;
    }
  | {
      /** A capability this package does not decode, kept so that nothing is silently dropped. */
      kind: 'unknown';
      /** The capability ID from its header. */
      id: number;
      /** The capability version from its header. */
      version: number;
    };

/** Result of VFIO_IOMMU_GET_INFO. */
export interface IommuInfo {
  /** The kernel's VFIO_IOMMU_INFO_* bits as returned (PGSIZES, CAPS). */
  flags: number;
  /** Bitmap of supported IOMMU page sizes. */
  iovaPgsizes: bigint;
  /** The IOMMU's capabilities in chain order; empty when the kernel reports none. */
  caps: IommuCap[];
}

function malformed(op: string, what: string): VfioError {
  return new VfioError({ message: `${op} returned a malformed structure: ${what}`, code: 'EPROTO', op });
}

function safeNumber(op: string, what: string, v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed(op, `${what} ${v} exceeds 2^53`);
  return Number(v);
}

interface RawCap {
  id: number;
  version: number;
  /** Offset of the capability header in the buffer. */
  at: number;
}

/**
 * Walk a capability chain: each header is { u16 id; u16 version; u32 next }, where next is the
 * offset of the following header from the start of the info structure (0 ends the chain). The
 * walk rejects headers outside the buffer, offsets inside the fixed structure, and cycles.
 */
export function walkCaps(op: string, buf: Uint8Array, first: number, fixedSize: number): RawCap[] {
  const dv = viewOf(buf);
  const caps: RawCap[] = [];
  const seen = new Set<number>();
  for (let at = first; at !== 0;) {
    if (at < fixedSize || at + 8 > buf.byteLength || at % 4 !== 0) {
      throw malformed(op, `capability at offset ${at} is outside the ${buf.byteLength}-byte buffer`);
    }
    if (seen.has(at)) throw malformed(op, `capability chain loops at offset ${at}`);
    seen.add(at);
    caps.push({ id: dv.getUint16(at, true), version: dv.getUint16(at + 2, true), at });
    at = dv.getUint32(at + 4, true);
  }
  return caps;
}

function need(op: string, buf: Uint8Array, at: number, size: number, what: string): void {
  if (at + size > buf.byteLength) throw malformed(op, `${what} at offset ${at} runs past the buffer`);
}

/** Parse struct vfio_device_info (20 bytes; capabilities, if any, are not needed yet). */
export function parseDeviceInfo(buf: Uint8Array): DeviceInfo {
  const op = 'VFIO_DEVICE_GET_INFO';
  need(op, buf, 0, 16, 'vfio_device_info');
  const dv = viewOf(buf);
  const flags = dv.getUint32(4, true);
  return {
    flags,
    numRegions: dv.getUint32(8, true),
    numIrqs: dv.getUint32(12, true),
    pci: (flags & VFIO_DEVICE_FLAGS_PCI) !== 0,
    reset: (flags & VFIO_DEVICE_FLAGS_RESET) !== 0,
  };
}

/** Parse struct vfio_region_info (32 bytes) and its whole capability chain. */
export function parseRegionInfo(buf: Uint8Array): RegionInfo {
  const op = 'VFIO_DEVICE_GET_REGION_INFO';
  need(op, buf, 0, 32, 'vfio_region_info');
  const dv = viewOf(buf);
  const flags = dv.getUint32(4, true);
  const capOffset = dv.getUint32(12, true);
  const caps: RegionCap[] = [];
  if (flags & VFIO_REGION_INFO_FLAG_CAPS && capOffset !== 0) {
    for (const cap of walkCaps(op, buf, capOffset, 32)) {
      const at = cap.at;
      switch (cap.id) {
        case VFIO_REGION_INFO_CAP_SPARSE_MMAP: {
          need(op, buf, at, 16, 'sparse mmap capability');
          const n = dv.getUint32(at + 8, true);
          need(op, buf, at + 16, n * 16, `${n} sparse mmap areas`);
          const areas = [];
          for (let i = 0; i < n; i++) {
            const base = at + 16 + i * 16;
            areas.push({
              offset: safeNumber(op, 'sparse area offset', dv.getBigUint64(base, true)),
              size: safeNumber(op, 'sparse area size', dv.getBigUint64(base + 8, true)),
            });
          }
          caps.push({ kind: 'sparse-mmap', areas });
          break;
        }
        case VFIO_REGION_INFO_CAP_TYPE:
          need(op, buf, at, 16, 'type capability');
          caps.push({ kind: 'type', type: dv.getUint32(at + 8, true), subtype: dv.getUint32(at + 12, true) });
          break;
        case VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
          caps.push({ kind: 'msix-mappable' });
          break;
        default:
          caps.push({ kind: 'unknown', id: cap.id, version: cap.version });
      }
    }
  }
  return {
    index: dv.getUint32(8, true),
    flags,
    readable: (flags & VFIO_REGION_INFO_FLAG_READ) !== 0,
    writable: (flags & VFIO_REGION_INFO_FLAG_WRITE) !== 0,
    mappable: (flags & VFIO_REGION_INFO_FLAG_MMAP) !== 0,
    size: safeNumber(op, 'region size', dv.getBigUint64(16, true)),
    offset: safeNumber(op, 'region offset', dv.getBigUint64(24, true)),
    caps,
  };
}

/** Parse struct vfio_irq_info (16 bytes). */
export function parseIrqInfo(buf: Uint8Array): IrqInfo {
  need('VFIO_DEVICE_GET_IRQ_INFO', buf, 0, 16, 'vfio_irq_info');
  const dv = viewOf(buf);
  const flags = dv.getUint32(4, true);
  return {
    index: dv.getUint32(8, true),
    flags,
    count: dv.getUint32(12, true),
    eventfd: (flags & VFIO_IRQ_INFO_EVENTFD) !== 0,
    maskable: (flags & VFIO_IRQ_INFO_MASKABLE) !== 0,
    automasked: (flags & VFIO_IRQ_INFO_AUTOMASKED) !== 0,
    noresize: (flags & VFIO_IRQ_INFO_NORESIZE) !== 0,
  };
}

/** Parse struct vfio_iommu_type1_info (24 bytes) and its whole capability chain. */
export function parseIommuInfo(buf: Uint8Array): IommuInfo {
  const op = 'VFIO_IOMMU_GET_INFO';
  need(op, buf, 0, 24, 'vfio_iommu_type1_info');
  const dv = viewOf(buf);
  const flags = dv.getUint32(4, true);
  const capOffset = dv.getUint32(16, true);
  const caps: IommuCap[] = [];
  if (flags & VFIO_IOMMU_INFO_CAPS && capOffset !== 0) {
    for (const cap of walkCaps(op, buf, capOffset, 24)) {
      const at = cap.at;
      switch (cap.id) {
        case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: {
          need(op, buf, at, 16, 'IOVA range capability');
          const n = dv.getUint32(at + 8, true);
          need(op, buf, at + 16, n * 16, `${n} IOVA ranges`);
          const ranges = [];
          for (let i = 0; i < n; i++) {
            const base = at + 16 + i * 16;
            ranges.push({ start: dv.getBigUint64(base, true), end: dv.getBigUint64(base + 8, true) });
          }
          caps.push({ kind: 'iova-ranges', ranges });
          break;
        }
        case VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION:
          need(op, buf, at, 32, 'migration capability');
          caps.push({
            kind: 'migration',
            flags: dv.getUint32(at + 8, true),
            pgsizeBitmap: dv.getBigUint64(at + 16, true),
            maxDirtyBitmapSize: dv.getBigUint64(at + 24, true),
          });
          break;
        case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
          need(op, buf, at, 12, 'DMA avail capability');
          caps.push({ kind: 'dma-avail', avail: dv.getUint32(at + 8, true) });
          break;
        default:
          caps.push({ kind: 'unknown', id: cap.id, version: cap.version });
      }
    }
  }
  return {
    flags,
    iovaPgsizes: flags & VFIO_IOMMU_INFO_PGSIZES ? dv.getBigUint64(8, true) : 0n,
    caps,
  };
}
