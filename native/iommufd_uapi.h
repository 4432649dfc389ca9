// The iommufd uAPI (/dev/iommu, Linux 6.2+) and the VFIO device cdev ioctls (Linux 6.6+), which
// this machine's 6.1 headers predate. The layouts and numbers are the kernel's
// include/uapi/linux/iommufd.h and vfio.h; the static_asserts pin every size and offset, and
// `iommufdUapi` (iommufd.cc) hands them to the tests that check them against the uAPI's facts.
// Only the fields vfio-bridge uses have names; the rest are reserved and must be zero.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vfio_bridge {
namespace uapi {

// _IO(type, nr): no direction, no size, so the number is (type << 8) | nr.
constexpr unsigned long IoNr(unsigned type, unsigned nr) { return (type << 8) | nr; }

constexpr unsigned kIommufdType = ';';
constexpr unsigned kIommufdCmdBase = 0x80;
constexpr unsigned long kIommuDestroy = IoNr(kIommufdType, kIommufdCmdBase + 0);
constexpr unsigned long kIommuIoasAlloc = IoNr(kIommufdType, kIommufdCmdBase + 1);
constexpr unsigned long kIommuIoasIovaRanges = IoNr(kIommufdType, kIommufdCmdBase + 4);
constexpr unsigned long kIommuIoasMap = IoNr(kIommufdType, kIommufdCmdBase + 5);
constexpr unsigned long kIommuIoasUnmap = IoNr(kIommufdType, kIommufdCmdBase + 6);
constexpr unsigned long kIommuHwptAlloc = IoNr(kIommufdType, kIommufdCmdBase + 9);
constexpr unsigned long kIommuGetHwInfo = IoNr(kIommufdType, kIommufdCmdBase + 10);

// VFIO_TYPE is ';' too, VFIO_BASE 100: the device cdev's ioctls follow VFIO_DEVICE_FEATURE (+17).
constexpr unsigned kVfioBase = 100;
constexpr unsigned long kVfioDeviceBindIommufd = IoNr(kIommufdType, kVfioBase + 18);
constexpr unsigned long kVfioDeviceAttachIommufdPt = IoNr(kIommufdType, kVfioBase + 19);
constexpr unsigned long kVfioDeviceDetachIommufdPt = IoNr(kIommufdType, kVfioBase + 20);

// enum iommufd_ioas_map_flags
constexpr uint32_t kIoasMapFixedIova = 1u << 0;
constexpr uint32_t kIoasMapWriteable = 1u << 1;
constexpr uint32_t kIoasMapReadable = 1u << 2;

/** struct iommu_destroy */
struct IommuDestroy {
  uint32_t size;
  uint32_t id;
};

/** struct iommu_ioas_alloc */
struct IommuIoasAlloc {
  uint32_t size;
  uint32_t flags;
  uint32_t out_ioas_id;
};

/** struct iommu_iova_range: inclusive [start, last]. */
struct IommuIovaRange {
  alignas(8) uint64_t start;
  alignas(8) uint64_t last;
};

/** struct iommu_ioas_iova_ranges */
struct IommuIoasIovaRanges {
  uint32_t size;
  uint32_t ioas_id;
  uint32_t num_iovas;
  uint32_t reserved;
  alignas(8) uint64_t allowed_iovas;
  alignas(8) uint64_t out_iova_alignment;
};

/** struct iommu_ioas_map */
struct IommuIoasMap {
  uint32_t size;
  uint32_t flags;
  uint32_t ioas_id;
  uint32_t reserved;
  alignas(8) uint64_t user_va;
  alignas(8) uint64_t length;
  alignas(8) uint64_t iova;
};

/** struct iommu_ioas_unmap */
struct IommuIoasUnmap {
  uint32_t size;
  uint32_t ioas_id;
  alignas(8) uint64_t iova;
  alignas(8) uint64_t length;
};

/** struct iommu_hwpt_alloc (kernel-managed: data_type IOMMU_HWPT_DATA_NONE, no data) */
struct IommuHwptAlloc {
  uint32_t size;
  uint32_t flags;
  uint32_t dev_id;
  uint32_t pt_id;
  uint32_t out_hwpt_id;
  uint32_t reserved;
  uint32_t data_type;
  uint32_t data_len;
  alignas(8) uint64_t data_uptr;
};

/** struct iommu_hw_info */
struct IommuHwInfo {
  uint32_t size;
  uint32_t flags;
  uint32_t dev_id;
  uint32_t data_len;
  alignas(8) uint64_t data_uptr;
  uint32_t out_data_type;
  uint32_t reserved;
  alignas(8) uint64_t out_capabilities;
};

/** struct vfio_device_bind_iommufd (the 6.6 layout; later kernels accept it as the minimum). */
struct VfioDeviceBindIommufd {
  uint32_t argsz;
  uint32_t flags;
  int32_t iommufd;
  uint32_t out_devid;
};

/** struct vfio_device_attach_iommufd_pt (without the later pasid field) */
struct VfioDeviceAttachIommufdPt {
  uint32_t argsz;
  uint32_t flags;
  uint32_t pt_id;
};

/** struct vfio_device_detach_iommufd_pt (without the later pasid field) */
struct VfioDeviceDetachIommufdPt {
  uint32_t argsz;
  uint32_t flags;
};

static_assert(sizeof(IommuDestroy) == 8, "iommu_destroy");
static_assert(sizeof(IommuIoasAlloc) == 12, "iommu_ioas_alloc");
static_assert(offsetof(IommuIoasAlloc, out_ioas_id) == 8, "iommu_ioas_alloc.out_ioas_id");
static_assert(sizeof(IommuIovaRange) == 16, "iommu_iova_range");
static_assert(sizeof(IommuIoasIovaRanges) == 32, "iommu_ioas_iova_ranges");
static_assert(offsetof(IommuIoasIovaRanges, num_iovas) == 8, "iova_ranges.num_iovas");
static_assert(offsetof(IommuIoasIovaRanges, allowed_iovas) == 16, "iova_ranges.allowed_iovas");
static_assert(offsetof(IommuIoasIovaRanges, out_iova_alignment) == 24, "iova_ranges.alignment");
static_assert(sizeof(IommuIoasMap) == 40, "iommu_ioas_map");
static_assert(offsetof(IommuIoasMap, user_va) == 16, "iommu_ioas_map.user_va");
static_assert(offsetof(IommuIoasMap, length) == 24, "iommu_ioas_map.length");
static_assert(offsetof(IommuIoasMap, iova) == 32, "iommu_ioas_map.iova");
static_assert(sizeof(IommuIoasUnmap) == 24, "iommu_ioas_unmap");
static_assert(offsetof(IommuIoasUnmap, iova) == 8, "iommu_ioas_unmap.iova");
static_assert(offsetof(IommuIoasUnmap, length) == 16, "iommu_ioas_unmap.length");
static_assert(sizeof(IommuHwptAlloc) == 40, "iommu_hwpt_alloc");
static_assert(offsetof(IommuHwptAlloc, out_hwpt_id) == 16, "iommu_hwpt_alloc.out_hwpt_id");
static_assert(offsetof(IommuHwptAlloc, data_uptr) == 32, "iommu_hwpt_alloc.data_uptr");
static_assert(sizeof(IommuHwInfo) == 40, "iommu_hw_info");
static_assert(offsetof(IommuHwInfo, out_data_type) == 24, "iommu_hw_info.out_data_type");
static_assert(offsetof(IommuHwInfo, out_capabilities) == 32, "iommu_hw_info.out_capabilities");
static_assert(sizeof(VfioDeviceBindIommufd) == 16, "vfio_device_bind_iommufd");
static_assert(offsetof(VfioDeviceBindIommufd, out_devid) == 12, "bind_iommufd.out_devid");
static_assert(sizeof(VfioDeviceAttachIommufdPt) == 12, "vfio_device_attach_iommufd_pt");
static_assert(sizeof(VfioDeviceDetachIommufdPt) == 8, "vfio_device_detach_iommufd_pt");

}  // namespace uapi
}  // namespace vfio_bridge
