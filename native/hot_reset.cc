// PCI hot reset: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO (which devices and groups a bus reset would
// take with it) and VFIO_DEVICE_PCI_HOT_RESET (the reset itself, proving ownership of every group
// by passing its fd). Which groups to pass is decided in lib/vfio.
#include <linux/vfio.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "args.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

/** HotResetInfo(device) - the raw info (header and dependent devices) as a Buffer. */
napi_value HotResetInfo(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  const char* op = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO";
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr) return nullptr;
  uint32_t count = 0;
  // The kernel answers ENOSPC with the count it needs; the set can change between the two calls.
  for (int attempt = 0; attempt < 8; attempt++) {
    size_t size = sizeof(vfio_pci_hot_reset_info) + count * sizeof(vfio_pci_dependent_device);
    std::vector<uint64_t> storage((size + 7) / 8, 0);
    auto* hi = reinterpret_cast<vfio_pci_hot_reset_info*>(storage.data());
    hi->argsz = static_cast<uint32_t>(size);
    int r = Ioctl(h->fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hi);
    if (r == -ENOSPC && hi->count > count && hi->count < 65536) {
      count = hi->count;
      continue;
    }
    if (r < 0) return ThrowErrno(env, op, h, -r);
    size_t used = sizeof(vfio_pci_hot_reset_info) + hi->count * sizeof(vfio_pci_dependent_device);
    if (used > size) used = size;
    napi_value out;
    void* data;
    napi_create_buffer_copy(env, used, hi, &data, &out);
    return out;
  }
  return ThrowVfioError(env, op, EAGAIN, "the dependent device count kept growing", h->where);
}

/** HotReset(device, groupFds) - VFIO_DEVICE_PCI_HOT_RESET with the fds in an Int32Array. */
napi_value HotReset(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  const char* op = "VFIO_DEVICE_PCI_HOT_RESET";
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr) return nullptr;
  bool is_typed = false;
  napi_is_typedarray(env, args[1], &is_typed);
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (is_typed) napi_get_typedarray_info(env, args[1], &type, &length, &data, nullptr, nullptr);
  if (!is_typed || type != napi_int32_array) {
    return ThrowTypeError(env, "VFIO_DEVICE_PCI_HOT_RESET: group fds must be an Int32Array");
  }
  if (length > 4096) return ThrowRangeError(env, "VFIO_DEVICE_PCI_HOT_RESET: too many groups");
  size_t size = sizeof(vfio_pci_hot_reset) + length * sizeof(int32_t);
  std::vector<uint64_t> storage((size + 7) / 8, 0);
  auto* hr = reinterpret_cast<vfio_pci_hot_reset*>(storage.data());
  hr->argsz = static_cast<uint32_t>(size);
  hr->count = static_cast<uint32_t>(length);
  if (length > 0) std::memcpy(hr->group_fds, data, length * sizeof(int32_t));
  int r = Ioctl(h->fd, VFIO_DEVICE_PCI_HOT_RESET, hr);
  if (r < 0) return ThrowErrno(env, op, h, -r);
  return nullptr;
}

}  // namespace

void RegisterHotReset(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioHotResetInfo", HotResetInfo),
      Method("vfioHotReset", HotReset),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
