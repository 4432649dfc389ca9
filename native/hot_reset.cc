// PCI hot reset: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO (which devices and groups a bus reset would
// take with it) and VFIO_DEVICE_PCI_HOT_RESET (the reset itself, proving ownership of every group
// by passing its fd), the latter also on the thread pool: a bus reset waits a second or more.
// Which groups to pass is decided in lib/vfio.
#include <linux/vfio.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

constexpr const char* kHotResetOp = "VFIO_DEVICE_PCI_HOT_RESET";

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

/**
 * GetGroupFds - the Int32Array of group fds VFIO_DEVICE_PCI_HOT_RESET proves ownership with;
 * false after throwing.
 */
bool GetGroupFds(napi_env env, napi_value value, const int32_t** fds, size_t* count) {
  bool is_typed = false;
  napi_is_typedarray(env, value, &is_typed);
  napi_typedarray_type type;
  void* data = nullptr;
  *count = 0;
  if (is_typed) napi_get_typedarray_info(env, value, &type, count, &data, nullptr, nullptr);
  if (!is_typed || type != napi_int32_array) {
    ThrowTypeError(env, "VFIO_DEVICE_PCI_HOT_RESET: group fds must be an Int32Array");
    return false;
  }
  if (*count > 4096) {
    ThrowRangeError(env, "VFIO_DEVICE_PCI_HOT_RESET: too many groups");
    return false;
  }
  *fds = static_cast<const int32_t*>(data);
  return true;
}

/** class HotResetRequest - a struct vfio_pci_hot_reset with room for its group fds. */
class HotResetRequest {
 public:
  explicit HotResetRequest(size_t count)
      : storage_((sizeof(vfio_pci_hot_reset) + count * sizeof(int32_t) + 7) / 8, 0) {
    hr()->argsz = static_cast<uint32_t>(sizeof(vfio_pci_hot_reset) + count * sizeof(int32_t));
    hr()->count = static_cast<uint32_t>(count);
  }
  vfio_pci_hot_reset* hr() { return reinterpret_cast<vfio_pci_hot_reset*>(storage_.data()); }

 private:
  std::vector<uint64_t> storage_;  // 8-byte aligned, as the kernel struct expects
};

/** HotReset(device, groupFds) - VFIO_DEVICE_PCI_HOT_RESET with the fds in an Int32Array. */
napi_value HotReset(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  FdResource* h = GetHandle(env, args[0], kHotResetOp);
  if (h == nullptr) return nullptr;
  const int32_t* fds;
  size_t count;
  if (!GetGroupFds(env, args[1], &fds, &count)) return nullptr;
  HotResetRequest req(count);
  if (count > 0) std::memcpy(req.hr()->group_fds, fds, count * sizeof(int32_t));
  int r = Ioctl(h->fd, VFIO_DEVICE_PCI_HOT_RESET, req.hr());
  if (r < 0) return ThrowErrno(env, kHotResetOp, h, -r);
  return nullptr;
}

/**
 * class HotResetCall - VFIO_DEVICE_PCI_HOT_RESET on the thread pool. The device fd and every group
 * fd are duplicated when it is queued, so closing a Group meanwhile cannot hand the kernel another
 * file under the same number.
 */
class HotResetCall : public AsyncCall {
 public:
  HotResetCall(const FdResource* h, size_t count)
      : AsyncCall(kHotResetOp, h->where), groups_(count), req_(count) {}

  bool Prepare(napi_env env, const FdResource* h, const int32_t* fds) {
    if (!DupFd(env, h, &device_)) return false;
    for (size_t i = 0; i < groups_.size(); i++) {
      if (groups_[i].Dup(fds[i])) {
        req_.hr()->group_fds[i] = groups_[i].get();
      } else if (errno == EBADF) {
        // Not an open fd now: -1 is never one either, so the kernel answers it as it would have
        // answered the caller's number, in its own order of checks (EBADF, unless another comes
        // first).
        req_.hr()->group_fds[i] = -1;
      } else {
        int err = errno;
        ThrowErrno(env, op, h, err, "duplicating group fd " + std::to_string(fds[i]));
        return false;
      }
    }
    return true;
  }

  void Run() override {
    int r = Ioctl(device_.get(), VFIO_DEVICE_PCI_HOT_RESET, req_.hr());
    err = r < 0 ? -r : 0;
    device_.Close();
    for (OwnedFd& g : groups_) g.Close();
  }

 private:
  OwnedFd device_;
  std::vector<OwnedFd> groups_;
  HotResetRequest req_;
};

/** HotResetAsync(device, groupFds) - a promise that settles when the bus reset is done. */
napi_value HotResetAsync(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  FdResource* h = GetHandle(env, args[0], kHotResetOp);
  if (h == nullptr) return nullptr;
  const int32_t* fds;
  size_t count;
  if (!GetGroupFds(env, args[1], &fds, &count)) return nullptr;
  auto* call = new HotResetCall(h, count);
  if (!call->Prepare(env, h, fds)) return Abandon(env, call);
  return Queue(env, call);
}

}  // namespace

void RegisterHotReset(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioHotResetInfo", HotResetInfo),
      Method("vfioHotReset", HotReset),
      Method("vfioHotResetAsync", HotResetAsync),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
