// iommufd object ioctls on /dev/iommu: IO address spaces (IOAS) and their usable IOVA ranges,
// kernel-managed hardware page tables (HWPT), the IOMMU's hardware info for a bound device, and
// destroying any of these by ID. Each function is one ioctl (two for the size protocols); what the
// answers mean is decided in lib/vfio. The uAPI itself is iommufd_uapi.h.
#include <errno.h>

#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>

#include "args.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"
#include "iommufd_uapi.h"
#include "module.h"

namespace vfio_bridge {
namespace {

using namespace uapi;

napi_value Uint(napi_env env, uint32_t v) {
  napi_value out;
  napi_create_uint32(env, v, &out);
  return out;
}

/** IoasAlloc(iommufd) - IOMMU_IOAS_ALLOC; returns the new IOAS's ID. */
napi_value IoasAlloc(napi_env env, napi_callback_info info) {
  const char* op = "IOMMU_IOAS_ALLOC";
  Args<1> args(env, info);
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr) return nullptr;
  IommuIoasAlloc req = {};
  req.size = sizeof req;
  int r = Ioctl(h->fd, kIommuIoasAlloc, &req);
  if (r < 0) return ThrowErrno(env, op, h, -r);
  return Uint(env, req.out_ioas_id);
}

/** Destroy(iommufd, id) - IOMMU_DESTROY of any object (IOAS, HWPT). */
napi_value Destroy(napi_env env, napi_callback_info info) {
  const char* op = "IOMMU_DESTROY";
  Args<2> args(env, info);
  uint32_t id;
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr || !GetUint32(env, args[1], "id", &id)) return nullptr;
  IommuDestroy req = {};
  req.size = sizeof req;
  req.id = id;
  int r = Ioctl(h->fd, kIommuDestroy, &req);
  if (r < 0) return ThrowErrno(env, op, h, -r, "object " + std::to_string(id));
  return nullptr;
}

/** The most ranges we accept: an IOAS has a handful (the reserved regions split the space). */
constexpr uint32_t kMaxIovaRanges = 4096;

/**
 * IoasIovaRanges(iommufd, ioas) - IOMMU_IOAS_IOVA_RANGES with the kernel's size protocol: asked
 * with no room, it answers EMSGSIZE and the count; asked again with room for that many (the count
 * can grow meanwhile, as devices attach), it fills them. Returns a BigUint64Array:
 * [out_iova_alignment, start0, last0, start1, last1, ...].
 */
napi_value IoasIovaRanges(napi_env env, napi_callback_info info) {
  const char* op = "IOMMU_IOAS_IOVA_RANGES";
  Args<2> args(env, info);
  uint32_t ioas;
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr || !GetUint32(env, args[1], "ioas", &ioas)) return nullptr;
  std::vector<IommuIovaRange> ranges;
  for (int attempt = 0; attempt < 8; attempt++) {
    IommuIoasIovaRanges req = {};
    req.size = sizeof req;
    req.ioas_id = ioas;
    req.num_iovas = static_cast<uint32_t>(ranges.size());
    req.allowed_iovas = ranges.empty() ? 0 : reinterpret_cast<uint64_t>(ranges.data());
    int r = Ioctl(h->fd, kIommuIoasIovaRanges, &req);
    if (r == -EMSGSIZE && req.num_iovas > ranges.size() && req.num_iovas <= kMaxIovaRanges) {
      ranges.assign(req.num_iovas, IommuIovaRange{});
      continue;
    }
    if (r < 0) return ThrowErrno(env, op, h, -r, "IOAS " + std::to_string(ioas));
    // On success num_iovas is how many the kernel filled, never more than there was room for.
    size_t n = req.num_iovas < ranges.size() ? req.num_iovas : ranges.size();
    napi_value ab, out;
    void* data;
    napi_create_arraybuffer(env, (1 + 2 * n) * sizeof(uint64_t), &data, &ab);
    auto* words = static_cast<uint64_t*>(data);
    words[0] = req.out_iova_alignment;
    for (size_t i = 0; i < n; i++) {
      words[1 + 2 * i] = ranges[i].start;
      words[2 + 2 * i] = ranges[i].last;
    }
    napi_create_typedarray(env, napi_biguint64_array, 1 + 2 * n, ab, 0, &out);
    return out;
  }
  return ThrowVfioError(env, op, EAGAIN, "the range count kept growing", h->where);
}

/**
 * HwptAlloc(iommufd, devId, ptId, flags) - IOMMU_HWPT_ALLOC of a kernel-managed page table for the
 * bound device @devId over the IOAS @ptId; returns the HWPT's ID.
 */
napi_value HwptAlloc(napi_env env, napi_callback_info info) {
  const char* op = "IOMMU_HWPT_ALLOC";
  Args<4> args(env, info);
  uint32_t dev, pt, flags;
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr || !GetUint32(env, args[1], "devId", &dev) ||
      !GetUint32(env, args[2], "ptId", &pt) || !GetUint32(env, args[3], "flags", &flags)) {
    return nullptr;
  }
  IommuHwptAlloc req = {};
  req.size = sizeof req;
  req.flags = flags;
  req.dev_id = dev;
  req.pt_id = pt;
  int r = Ioctl(h->fd, kIommuHwptAlloc, &req);
  if (r < 0) {
    return ThrowErrno(env, op, h, -r,
                      "device " + std::to_string(dev) + " on object " + std::to_string(pt));
  }
  return Uint(env, req.out_hwpt_id);
}

/** The most hardware info we accept: the VT-d record is 24 bytes, SMMUv3's 16. */
constexpr uint32_t kMaxHwInfo = 4096;

/**
 * GetHwInfo(iommufd, devId) - IOMMU_GET_HW_INFO for bound device @devId: asked with no room for the
 * driver's record, the kernel says its length; asked again, it fills it. Returns
 * { type, capabilities (bigint), data (Buffer) }.
 */
napi_value GetHwInfo(napi_env env, napi_callback_info info) {
  const char* op = "IOMMU_GET_HW_INFO";
  Args<2> args(env, info);
  uint32_t dev;
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr || !GetUint32(env, args[1], "devId", &dev)) return nullptr;
  std::vector<uint64_t> data;
  IommuHwInfo req = {};
  for (int attempt = 0; attempt < 2; attempt++) {
    req = {};
    req.size = sizeof req;
    req.dev_id = dev;
    req.data_len = static_cast<uint32_t>(data.size() * sizeof(uint64_t));
    req.data_uptr = data.empty() ? 0 : reinterpret_cast<uint64_t>(data.data());
    int r = Ioctl(h->fd, kIommuGetHwInfo, &req);
    if (r < 0) return ThrowErrno(env, op, h, -r, "device " + std::to_string(dev));
    if (req.data_len <= data.size() * sizeof(uint64_t) || req.data_len > kMaxHwInfo) break;
    data.assign((req.data_len + 7) / 8, 0);
  }
  size_t len =
      req.data_len < data.size() * sizeof(uint64_t) ? req.data_len : data.size() * sizeof(uint64_t);
  napi_value out, caps, buf;
  void* copy;
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "type", Uint(env, req.out_data_type));
  napi_create_bigint_uint64(env, req.out_capabilities, &caps);
  napi_set_named_property(env, out, "capabilities", caps);
  napi_create_buffer_copy(env, len, data.data(), &copy, &buf);
  napi_set_named_property(env, out, "data", buf);
  return out;
}

}  // namespace

void RegisterIommufd(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("iommufdIoasAlloc", IoasAlloc),           Method("iommufdDestroy", Destroy),
      Method("iommufdIoasIovaRanges", IoasIovaRanges), Method("iommufdHwptAlloc", HwptAlloc),
      Method("iommufdGetHwInfo", GetHwInfo),
  };
  DefineMethods(env, exports, methods);
  // What the addon was built with, by the uAPI's names: the tests hold it against the kernel's
  // headers (sizes, field offsets, ioctl numbers).
  napi_value facts;
  napi_create_object(env, &facts);
  auto put = [&](std::initializer_list<std::pair<const char*, double>> list) {
    for (const auto& [name, n] : list) {
      napi_value v;
      napi_create_double(env, n, &v);
      napi_set_named_property(env, facts, name, v);
    }
  };
  auto d = [](auto v) { return static_cast<double>(v); };
  put({{"IOMMU_DESTROY", d(kIommuDestroy)},
       {"IOMMU_IOAS_ALLOC", d(kIommuIoasAlloc)},
       {"IOMMU_IOAS_IOVA_RANGES", d(kIommuIoasIovaRanges)},
       {"IOMMU_IOAS_MAP", d(kIommuIoasMap)},
       {"IOMMU_IOAS_UNMAP", d(kIommuIoasUnmap)},
       {"IOMMU_HWPT_ALLOC", d(kIommuHwptAlloc)},
       {"IOMMU_GET_HW_INFO", d(kIommuGetHwInfo)},
       {"VFIO_DEVICE_BIND_IOMMUFD", d(kVfioDeviceBindIommufd)},
       {"VFIO_DEVICE_ATTACH_IOMMUFD_PT", d(kVfioDeviceAttachIommufdPt)},
       {"VFIO_DEVICE_DETACH_IOMMUFD_PT", d(kVfioDeviceDetachIommufdPt)},
       {"IOMMU_IOAS_MAP_FIXED_IOVA", d(kIoasMapFixedIova)},
       {"IOMMU_IOAS_MAP_WRITEABLE", d(kIoasMapWriteable)},
       {"IOMMU_IOAS_MAP_READABLE", d(kIoasMapReadable)},
       {"sizeof iommu_destroy", d(sizeof(IommuDestroy))},
       {"sizeof iommu_ioas_alloc", d(sizeof(IommuIoasAlloc))},
       {"sizeof iommu_iova_range", d(sizeof(IommuIovaRange))},
       {"sizeof iommu_ioas_iova_ranges", d(sizeof(IommuIoasIovaRanges))},
       {"sizeof iommu_ioas_map", d(sizeof(IommuIoasMap))},
       {"sizeof iommu_ioas_unmap", d(sizeof(IommuIoasUnmap))},
       {"sizeof iommu_hwpt_alloc", d(sizeof(IommuHwptAlloc))},
       {"sizeof iommu_hw_info", d(sizeof(IommuHwInfo))},
       {"sizeof vfio_device_bind_iommufd", d(sizeof(VfioDeviceBindIommufd))},
       {"sizeof vfio_device_attach_iommufd_pt", d(sizeof(VfioDeviceAttachIommufdPt))},
       {"sizeof vfio_device_detach_iommufd_pt", d(sizeof(VfioDeviceDetachIommufdPt))},
       {"iommu_ioas_alloc.out_ioas_id", d(offsetof(IommuIoasAlloc, out_ioas_id))},
       {"iommu_ioas_iova_ranges.num_iovas", d(offsetof(IommuIoasIovaRanges, num_iovas))},
       {"iommu_ioas_iova_ranges.allowed_iovas", d(offsetof(IommuIoasIovaRanges, allowed_iovas))},
       {"iommu_ioas_iova_ranges.out_iova_alignment",
        d(offsetof(IommuIoasIovaRanges, out_iova_alignment))},
       {"iommu_iova_range.last", d(offsetof(IommuIovaRange, last))},
       {"iommu_ioas_map.flags", d(offsetof(IommuIoasMap, flags))},
       {"iommu_ioas_map.ioas_id", d(offsetof(IommuIoasMap, ioas_id))},
       {"iommu_ioas_map.user_va", d(offsetof(IommuIoasMap, user_va))},
       {"iommu_ioas_map.length", d(offsetof(IommuIoasMap, length))},
       {"iommu_ioas_map.iova", d(offsetof(IommuIoasMap, iova))},
       {"iommu_ioas_unmap.ioas_id", d(offsetof(IommuIoasUnmap, ioas_id))},
       {"iommu_ioas_unmap.iova", d(offsetof(IommuIoasUnmap, iova))},
       {"iommu_ioas_unmap.length", d(offsetof(IommuIoasUnmap, length))},
       {"iommu_hwpt_alloc.dev_id", d(offsetof(IommuHwptAlloc, dev_id))},
       {"iommu_hwpt_alloc.pt_id", d(offsetof(IommuHwptAlloc, pt_id))},
       {"iommu_hwpt_alloc.out_hwpt_id", d(offsetof(IommuHwptAlloc, out_hwpt_id))},
       {"iommu_hwpt_alloc.data_type", d(offsetof(IommuHwptAlloc, data_type))},
       {"iommu_hwpt_alloc.data_uptr", d(offsetof(IommuHwptAlloc, data_uptr))},
       {"iommu_hw_info.dev_id", d(offsetof(IommuHwInfo, dev_id))},
       {"iommu_hw_info.data_len", d(offsetof(IommuHwInfo, data_len))},
       {"iommu_hw_info.data_uptr", d(offsetof(IommuHwInfo, data_uptr))},
       {"iommu_hw_info.out_data_type", d(offsetof(IommuHwInfo, out_data_type))},
       {"iommu_hw_info.out_capabilities", d(offsetof(IommuHwInfo, out_capabilities))},
       {"vfio_device_bind_iommufd.iommufd", d(offsetof(VfioDeviceBindIommufd, iommufd))},
       {"vfio_device_bind_iommufd.out_devid", d(offsetof(VfioDeviceBindIommufd, out_devid))},
       {"vfio_device_attach_iommufd_pt.pt_id", d(offsetof(VfioDeviceAttachIommufdPt, pt_id))}});
  napi_set_named_property(env, exports, "iommufdUapi", facts);
}

}  // namespace vfio_bridge
