// Container ioctls on /dev/vfio/vfio: API version, IOMMU extensions, IOMMU selection and info.
// The info structure and its capability chain are returned raw and parsed in lib/vfio, where the
// parser can be tested on synthetic buffers.
#include <linux/vfio.h>
#include <sys/resource.h>

#include "args.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

/** GetApiVersion(container) - VFIO_GET_API_VERSION. */
napi_value GetApiVersion(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, VFIO_GET_API_VERSION, "VFIO_GET_API_VERSION", nullptr);
}

/** CheckExtension(container, ext) - VFIO_CHECK_EXTENSION; > 0 when supported. */
napi_value CheckExtension(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, VFIO_CHECK_EXTENSION, "VFIO_CHECK_EXTENSION", "extension");
}

/** SetIommu(container, type) - VFIO_SET_IOMMU. */
napi_value SetIommu(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, VFIO_SET_IOMMU, "VFIO_SET_IOMMU", "type", false);
}

/** IommuInfo(container) - VFIO_IOMMU_GET_INFO with its capability chain, as a Buffer. */
napi_value IommuInfo(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  FdResource* h = GetHandle(env, args[0], "VFIO_IOMMU_GET_INFO");
  if (h == nullptr) return nullptr;
  return GetInfo(env, h, VFIO_IOMMU_GET_INFO, "VFIO_IOMMU_GET_INFO", sizeof(vfio_iommu_type1_info),
                 0, 0);
}

/** MemlockLimit() - [soft, hard] RLIMIT_MEMLOCK in bytes as bigints (2^64 - 1 = unlimited). */
napi_value MemlockLimit(napi_env env, napi_callback_info) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) {
    int err = errno;
    return ThrowVfioError(env, "getrlimit", err, "RLIMIT_MEMLOCK", ErrorContext{});
  }
  napi_value out, soft, hard;
  napi_create_array_with_length(env, 2, &out);
  napi_create_bigint_uint64(env, rl.rlim_cur, &soft);
  napi_create_bigint_uint64(env, rl.rlim_max, &hard);
  napi_set_element(env, out, 0, soft);
  napi_set_element(env, out, 1, hard);
  return out;
}

}  // namespace

void RegisterContainer(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioGetApiVersion", GetApiVersion), Method("vfioCheckExtension", CheckExtension),
      Method("vfioSetIommu", SetIommu),           Method("vfioIommuInfo", IommuInfo),
      Method("memlockLimit", MemlockLimit),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
