/**
 * The iommufd uAPI (linux/iommufd.h) and the VFIO device cdev's (linux/vfio.h, Linux 6.6+) as this
 * package uses them: the ioctl numbers and struct layouts the addon is built with (checked against
 * these facts by test/native), and the parsers of what the addon hands back raw.
 */
import { VfioError } from '../base/native-errors';
import type { IovaRange } from './uapi';
import { viewOf } from '../base/values';

/** _IO(type, nr): iommufd and VFIO share type ';' (0x3b); no direction or size bits. */
function io(nr: number): number {
  return (0x3b << 8) | nr;
}

/** The ioctl numbers, by their uAPI names (IOMMUFD_CMD_BASE 0x80, VFIO_BASE 100). */
export const IOMMUFD_IOCTLS = {
  /** Destroys an object of the iommufd (an IOAS, a HWPT) by its ID. */
  IOMMU_DESTROY: io(0x80),
  /** Allocates an empty IO address space and returns its ID. */
  IOMMU_IOAS_ALLOC: io(0x81),
  /** Reports the IOVA ranges an IOAS can map and the alignment its attached page tables need. */
  IOMMU_IOAS_IOVA_RANGES: io(0x84),
  /** Maps user memory into an IOAS at an IOVA. */
  IOMMU_IOAS_MAP: io(0x85),
  /** Unmaps an IOVA range of an IOAS; returns the bytes unmapped. */
  IOMMU_IOAS_UNMAP: io(0x86),
  /** Allocates a hardware page table (HWPT) for a device over an IOAS, e.g. with dirty tracking. */
  IOMMU_HWPT_ALLOC: io(0x89),
  /** Reports the IOMMU behind a bound device: its type, capabilities and driver data. */
  IOMMU_GET_HW_INFO: io(0x8a),
  /** Binds a device cdev to an iommufd; returns the device's ID there. VFIO's, numbered from VFIO_BASE. */
  VFIO_DEVICE_BIND_IOMMUFD: io(100 + 18),
  /** Attaches a bound device to an IOAS or a HWPT. VFIO's, numbered from VFIO_BASE. */
  VFIO_DEVICE_ATTACH_IOMMUFD_PT: io(100 + 19),
  /** Detaches a bound device from its IOAS or HWPT. VFIO's, numbered from VFIO_BASE. */
  VFIO_DEVICE_DETACH_IOMMUFD_PT: io(100 + 20),
} as const;

/** enum iommufd_ioas_map_flags: map at the IOVA given (vfio-bridge always does). */
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
/** enum iommufd_ioas_map_flags: the device may write. */
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
/** enum iommufd_ioas_map_flags: the device may read. */
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;

/** enum iommufd_hwpt_alloc_flags: a parent page table for nesting. */
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
/** enum iommufd_hwpt_alloc_flags: dirty tracking is enforced on the devices attached. */
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;

/** enum iommu_hw_info_type: a driver that reports no hardware info. */
export const IOMMU_HW_INFO_TYPE_NONE = 0;
/** enum iommu_hw_info_type: Intel VT-d (struct iommu_hw_info_vtd). */
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
/** enum iommu_hw_info_type: Arm SMMUv3 (struct iommu_hw_info_arm_smmuv3). */
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;

/** enum iommufd_hw_capabilities. */
export const IOMMU_HW_CAP_DIRTY_TRACKING = 1n << 0n;

/** The struct sizes and field offsets the addon must be built with, as in the kernel's headers. */
export const IOMMUFD_LAYOUT: Readonly<Record<string, number>> = {
  'sizeof iommu_destroy': 8,
  'sizeof iommu_ioas_alloc': 12,
  'sizeof iommu_iova_range': 16,
  'sizeof iommu_ioas_iova_ranges': 32,
  'sizeof iommu_ioas_map': 40,
  'sizeof iommu_ioas_unmap': 24,
  'sizeof iommu_hwpt_alloc': 40,
  'sizeof iommu_hw_info': 40,
  'sizeof vfio_device_bind_iommufd': 16,
  'sizeof vfio_device_attach_iommufd_pt': 12,
  'sizeof vfio_device_detach_iommufd_pt': 8,
  'iommu_ioas_alloc.out_ioas_id': 8,
  'iommu_ioas_iova_ranges.num_iovas': 8,
  'iommu_ioas_iova_ranges.allowed_iovas': 16,
  'iommu_ioas_iova_ranges.out_iova_alignment': 24,
  'iommu_iova_range.last': 8,
  'iommu_ioas_map.flags': 4,
  'iommu_ioas_map.ioas_id': 8,
  'iommu_ioas_map.user_va': 16,
  'iommu_ioas_map.length': 24,
  'iommu_ioas_map.iova': 32,
  'iommu_ioas_unmap.ioas_id': 4,
  'iommu_ioas_unmap.iova': 8,
  'iommu_ioas_unmap.length': 16,
  'iommu_hwpt_alloc.dev_id': 8,
  'iommu_hwpt_alloc.pt_id': 12,
  'iommu_hwpt_alloc.out_hwpt_id': 16,
  'iommu_hwpt_alloc.data_type': 24,
  'iommu_hwpt_alloc.data_uptr': 32,
  'iommu_hw_info.dev_id': 8,
  'iommu_hw_info.data_len': 12,
  'iommu_hw_info.data_uptr': 16,
  'iommu_hw_info.out_data_type': 24,
  'iommu_hw_info.out_capabilities': 32,
  'vfio_device_bind_iommufd.iommufd': 8,
  'vfio_device_bind_iommufd.out_devid': 12,
  'vfio_device_attach_iommufd_pt.pt_id': 8,
};

/** IOMMU_IOAS_IOVA_RANGES, decoded. */
export interface IoasIovaRanges {
  /** out_iova_alignment: iova and iova + length must be multiples of it (1: any). */
  readonly alignment: number;
  /** The allowed ranges, inclusive ends, ascending. */
  readonly ranges: readonly IovaRange[];
}

/** Decodes the addon's [alignment, start0, last0, ...] answer of IOMMU_IOAS_IOVA_RANGES. */
export function parseIovaRanges(words: BigUint64Array): IoasIovaRanges {
  if (words.length === 0 || words.length % 2 !== 1) {
    throw new VfioError({
      message: `IOMMU_IOAS_IOVA_RANGES answer of ${words.length} words is not alignment + pairs`,
      code: 'EPROTO',
      op: 'IOMMU_IOAS_IOVA_RANGES',
    });
  }
  const alignment = words[0];
  if (alignment === 0n || (alignment & (alignment - 1n)) !== 0n || alignment > 1n << 40n) {
    throw new VfioError({
      message: `IOMMU_IOAS_IOVA_RANGES: out_iova_alignment ${alignment} is not a power of two`,
      code: 'EPROTO',
      op: 'IOMMU_IOAS_IOVA_RANGES',
    });
  }
  const ranges: IovaRange[] = [];
  for (let i = 1; i < words.length; i += 2) ranges.push({ start: words[i], end: words[i + 1] });
  ranges.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  return { alignment: Number(alignment), ranges };
}

/** IOMMU_GET_HW_INFO, decoded. */
export interface IommuHwInfo {
  /** enum iommu_hw_info_type: 0 none, 1 Intel VT-d, 2 Arm SMMUv3, ... */
  readonly type: number;
  /** The type's name (`intel-vtd`, `arm-smmuv3`, `none`, or `type N`). */
  readonly typeName: string;
  /** out_capabilities (IOMMU_HW_CAP_*). */
  readonly capabilities: bigint;
  /** IOMMU_HW_CAP_DIRTY_TRACKING. */
  readonly dirtyTracking: boolean;
  /** struct iommu_hw_info_vtd, for an Intel IOMMU: its capability and extended capability registers. */
  readonly vtd?: {
    /** The record's flags (IOMMU_HW_INFO_VTD_*: errata the driver reports). */
    readonly flags: number;
    /** The VT-d capability register (CAP_REG), as the hardware reports it. */
    readonly capReg: bigint;
    /** The VT-d extended capability register (ECAP_REG), as the hardware reports it. */
    readonly ecapReg: bigint;
  };
  /** The driver's record, raw. */
  readonly data: Uint8Array;
}

const HW_TYPE_NAMES: Record<number, string> = {
  [IOMMU_HW_INFO_TYPE_NONE]: 'none',
  [IOMMU_HW_INFO_TYPE_INTEL_VTD]: 'intel-vtd',
  [IOMMU_HW_INFO_TYPE_ARM_SMMUV3]: 'arm-smmuv3',
};

/** Decodes IOMMU_GET_HW_INFO's answer (the VT-d record is 24 bytes: flags, reserved, cap, ecap). */
export function parseHwInfo(raw: { type: number; capabilities: bigint; data: Uint8Array }): IommuHwInfo {
  const out: IommuHwInfo = {
    type: raw.type,
    typeName: HW_TYPE_NAMES[raw.type] ?? `type ${raw.type}`,
    capabilities: raw.capabilities,
    dirtyTracking: (raw.capabilities & IOMMU_HW_CAP_DIRTY_TRACKING) !== 0n,
    data: raw.data,
  };
  if (raw.type === IOMMU_HW_INFO_TYPE_INTEL_VTD && raw.data.length >= 24) {
    const dv = viewOf(raw.data);
    return {
      ...out,
      vtd: {
        flags: dv.getUint32(0, true),
        capReg: dv.getBigUint64(8, true),
        ecapReg: dv.getBigUint64(16, true),
      },
    };
  }
  return out;
}
