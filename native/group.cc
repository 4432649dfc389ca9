// Group ioctls on /dev/vfio/N: status, container attach/detach, device fds.
#include <linux/vfio.h>

#include "args.h"
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
  Args<1> args(env, info);
  FdResource* g = GetHandle(env, args[0], "VFIO_GROUP_UNSET_CONTAINER");
  if (g == nullptr) return nullptr;
  int r = IoctlValue(g->fd, VFIO_GROUP_UNSET_CONTAINER, 0);
  if (r < 0) return ThrowErrno(env, "VFIO_GROUP_UNSET_CONTAINER", g, -r);
  return nullptr;
}

/** GroupGetDeviceFd(group, name) - VFIO_GROUP_GET_DEVICE_FD; returns a device handle. */
napi_value GroupGetDeviceFd(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  std::string name;
  FdResource* g = GetHandle(env, args[0], "VFIO_GROUP_GET_DEVICE_FD");
  if (g == nullptr || !GetString(env, args[1], "device", &name)) return nullptr;
  int fd = Ioctl(g->fd, VFIO_GROUP_GET_DEVICE_FD, name.data());
  if (fd < 0) {
    return ThrowVfioError(env, "VFIO_GROUP_GET_DEVICE_FD", -fd, "",
                          ErrorContext{g->where.path, name});
  }
  return NewHandle(env, fd, ErrorContext{g->where.path, name});
}

}  // namespace

void RegisterGroup(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioGroupStatus", GroupStatus),
      Method("vfioGroupSetContainer", GroupSetContainer),
      Method("vfioGroupUnsetContainer", GroupUnsetContainer),
      Method("vfioGroupGetDeviceFd", GroupGetDeviceFd),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
