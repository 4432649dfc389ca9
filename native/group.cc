// Group ioctls on /dev/vfio/N: status, container attach/detach, device fds. Opening a device can
// take long (vfio-pci enables it, and may reset it), so it also runs on the thread pool.
#include <linux/vfio.h>
#include <unistd.h>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

/** GroupStatus(group) - VFIO_GROUP_GET_STATUS flags. */
napi_value GroupStatus(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  FdResource* h = GetHandle(env, args[0], "VFIO_GROUP_GET_STATUS");
  if (h == nullptr) return nullptr;
  vfio_group_status status = {};
  status.argsz = sizeof status;
  int r = Ioctl(h->fd, VFIO_GROUP_GET_STATUS, &status);
  if (r < 0) return ThrowErrno(env, "VFIO_GROUP_GET_STATUS", h, -r);
  napi_value out;
  napi_create_uint32(env, status.flags, &out);
  return out;
}

/** GroupSetContainer(group, container) - VFIO_GROUP_SET_CONTAINER. */
napi_value GroupSetContainer(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  FdResource* g = GetHandle(env, args[0], "VFIO_GROUP_SET_CONTAINER");
  if (g == nullptr) return nullptr;
  FdResource* c = GetHandle(env, args[1], "VFIO_GROUP_SET_CONTAINER");
  if (c == nullptr) return nullptr;
  int container_fd = c->fd;
  int r = Ioctl(g->fd, VFIO_GROUP_SET_CONTAINER, &container_fd);
  if (r < 0) return ThrowErrno(env, "VFIO_GROUP_SET_CONTAINER", g, -r);
  return nullptr;
}

/** GroupUnsetContainer(group) - VFIO_GROUP_UNSET_CONTAINER. */
napi_value GroupUnsetContainer(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, VFIO_GROUP_UNSET_CONTAINER, "VFIO_GROUP_UNSET_CONTAINER", nullptr,
                    false);
}

constexpr const char* kGetDeviceFdOp = "VFIO_GROUP_GET_DEVICE_FD";

/**
 * DeviceHandle - the device handle for VFIO_GROUP_GET_DEVICE_FD's result @fd (or -errno), named
 * after the group node and the device; nullptr after throwing.
 */
napi_value DeviceHandle(napi_env env, int fd, const ErrorContext& where) {
  if (fd < 0) return ThrowVfioError(env, kGetDeviceFdOp, -fd, "", where);
  return NewHandle(env, fd, where);
}

/** GroupGetDeviceFd(group, name) - VFIO_GROUP_GET_DEVICE_FD; returns a device handle. */
napi_value GroupGetDeviceFd(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  std::string name;
  FdResource* g = GetHandle(env, args[0], kGetDeviceFdOp);
  if (g == nullptr || !GetString(env, args[1], "device", &name)) return nullptr;
  int fd = Ioctl(g->fd, VFIO_GROUP_GET_DEVICE_FD, name.data());
  return DeviceHandle(env, fd, ErrorContext{g->where.path, name});
}

/** class GetDeviceFdCall - VFIO_GROUP_GET_DEVICE_FD on the thread pool, on a dup of the group fd.
 */
class GetDeviceFdCall : public AsyncCall {
 public:
  GetDeviceFdCall(const FdResource* g, std::string name)
      : AsyncCall(kGetDeviceFdOp, ErrorContext{g->where.path, name}), name_(std::move(name)) {}
  // A device fd whose promise never settled (the environment went away first) is closed here.
  ~GetDeviceFdCall() override {
    if (fd_ >= 0) close(fd_);
  }

  bool Prepare(napi_env env, const FdResource* g) { return DupFd(env, g, &group_); }

  void Run() override {
    fd_ = Ioctl(group_.get(), VFIO_GROUP_GET_DEVICE_FD, name_.data());
    group_.Close();
  }

  napi_value Settle(napi_env env) override {
    napi_value handle = DeviceHandle(env, fd_, where);
    if (handle != nullptr) fd_ = -1;  // the handle owns it now
    return handle;
  }

 private:
  OwnedFd group_;
  std::string name_;
  int fd_ = -1;
};

/** GroupGetDeviceFdAsync(group, name) - a promise of the device handle. */
napi_value GroupGetDeviceFdAsync(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  std::string name;
  FdResource* g = GetHandle(env, args[0], kGetDeviceFdOp);
  if (g == nullptr || !GetString(env, args[1], "device", &name)) return nullptr;
  auto* call = new GetDeviceFdCall(g, std::move(name));
  if (!call->Prepare(env, g)) return Abandon(env, call);
  return Queue(env, call);
}

}  // namespace

void RegisterGroup(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioGroupStatus", GroupStatus),
      Method("vfioGroupSetContainer", GroupSetContainer),
      Method("vfioGroupUnsetContainer", GroupUnsetContainer),
      Method("vfioGroupGetDeviceFd", GroupGetDeviceFd),
      Method("vfioGroupGetDeviceFdAsync", GroupGetDeviceFdAsync),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
