// Device ioctls and region I/O through the device fd. Region info comes back raw (with its whole
// capability chain) and is parsed in lib/vfio. A reset can take hundreds of ms (an FLR waits 100 ms
// and more), so it also runs on the thread pool.
#include <linux/vfio.h>
#include <unistd.h>

#include <cstddef>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

/** DeviceInfo(device) - VFIO_DEVICE_GET_INFO (with capabilities when the kernel has them). */
napi_value DeviceInfo(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  FdResource* h = GetHandle(env, args[0], "VFIO_DEVICE_GET_INFO");
  if (h == nullptr) return nullptr;
  return GetInfo(env, h, VFIO_DEVICE_GET_INFO, "VFIO_DEVICE_GET_INFO", sizeof(vfio_device_info), 0,
                 0);
}

/** RegionInfo(device, index) - VFIO_DEVICE_GET_REGION_INFO with its capability chain. */
napi_value RegionInfo(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  uint32_t index;
  FdResource* h = GetHandle(env, args[0], "VFIO_DEVICE_GET_REGION_INFO");
  if (h == nullptr || !GetUint32(env, args[1], "index", &index)) return nullptr;
  return GetInfo(env, h, VFIO_DEVICE_GET_REGION_INFO, "VFIO_DEVICE_GET_REGION_INFO",
                 sizeof(vfio_region_info), offsetof(vfio_region_info, index), index);
}

/** IrqInfo(device, index) - VFIO_DEVICE_GET_IRQ_INFO. */
napi_value IrqInfo(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  uint32_t index;
  FdResource* h = GetHandle(env, args[0], "VFIO_DEVICE_GET_IRQ_INFO");
  if (h == nullptr || !GetUint32(env, args[1], "index", &index)) return nullptr;
  return GetInfo(env, h, VFIO_DEVICE_GET_IRQ_INFO, "VFIO_DEVICE_GET_IRQ_INFO",
                 sizeof(vfio_irq_info), offsetof(vfio_irq_info, index), index);
}

/** DeviceReset(device) - VFIO_DEVICE_RESET. */
napi_value DeviceReset(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, VFIO_DEVICE_RESET, "VFIO_DEVICE_RESET", nullptr, false);
}

/** class DeviceResetCall - VFIO_DEVICE_RESET on the thread pool, on a dup of the device fd. */
class DeviceResetCall : public AsyncCall {
 public:
  explicit DeviceResetCall(const FdResource* h) : AsyncCall("VFIO_DEVICE_RESET", h->where) {}

  bool Prepare(napi_env env, const FdResource* h) { return DupFd(env, h, &device_); }

  void Run() override {
    int r = IoctlValue(device_.get(), VFIO_DEVICE_RESET, 0);
    err = r < 0 ? -r : 0;
    device_.Close();
  }

 private:
  OwnedFd device_;
};

/** DeviceResetAsync(device) - a promise that settles when VFIO_DEVICE_RESET returns. */
napi_value DeviceResetAsync(napi_env env, napi_callback_info info) {
  return QueueOnHandle<DeviceResetCall>(env, info, "VFIO_DEVICE_RESET");
}

bool GetSize(napi_env env, napi_value v, uint32_t* size) {
  if (!GetUint32(env, v, "size", size)) return false;
  if (*size == 1 || *size == 2 || *size == 4 || *size == 8) return true;
  ThrowRangeError(env, "size " + std::to_string(*size) + " is not 1, 2, 4 or 8");
  return false;
}

napi_value ThrowShort(napi_env env, const char* op, FdResource* h, ssize_t done, uint64_t want,
                      uint64_t offset) {
  return ThrowVfioError(env, op, 0,
                        "transferred " + std::to_string(done) + " of " + std::to_string(want) +
                            " bytes at fd offset " + std::to_string(offset),
                        h->where, "ESHORT");
}

/** Pread(device, offset, size) - exactly one pread of 1, 2, 4 or 8 bytes (little-endian). */
napi_value Pread(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  uint64_t offset;
  uint32_t size;
  FdResource* h = GetHandle(env, args[0], "pread");
  if (h == nullptr || !GetSafeInteger(env, args[1], "offset", &offset) ||
      !GetSize(env, args[2], &size)) {
    return nullptr;
  }
  uint64_t value = 0;  // x86-64 is little-endian, so the low bytes are the value
  ssize_t n;
  do {
    n = pread(h->fd, &value, size, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    return ThrowErrno(env, "pread", h, err);
  }
  if (static_cast<size_t>(n) != size) return ThrowShort(env, "pread", h, n, size, offset);
  napi_value out;
  if (size == 8) {
    napi_create_bigint_uint64(env, value, &out);
  } else {
    napi_create_uint32(env, static_cast<uint32_t>(value), &out);
  }
  return out;
}

/** Pwrite(device, offset, size, value) - exactly one pwrite of 1, 2, 4 or 8 bytes. */
napi_value Pwrite(napi_env env, napi_callback_info info) {
  Args<4> args(env, info);
  uint64_t offset, value = 0;
  uint32_t size;
  FdResource* h = GetHandle(env, args[0], "pwrite");
  if (h == nullptr || !GetSafeInteger(env, args[1], "offset", &offset) ||
      !GetSize(env, args[2], &size)) {
    return nullptr;
  }
  if (size == 8) {
    bool lossless;
    if (napi_get_value_bigint_uint64(env, args[3], &value, &lossless) != napi_ok) {
      return ThrowTypeError(env, "pwrite: an 8-byte value must be a bigint");
    }
    if (!lossless) return ThrowRangeError(env, "pwrite: value does not fit in 8 bytes unsigned");
  } else {
    uint32_t v;
    if (!GetUint32(env, args[3], "value", &v)) return nullptr;
    if (size < 4 && v >> (8 * size) != 0) {
      return ThrowRangeError(env, "pwrite: value " + std::to_string(v) + " does not fit in " +
                                      std::to_string(size) + " byte(s)");
    }
    value = v;
  }
  ssize_t n;
  do {
    n = pwrite(h->fd, &value, size, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    return ThrowErrno(env, "pwrite", h, err);
  }
  if (static_cast<size_t>(n) != size) return ThrowShort(env, "pwrite", h, n, size, offset);
  return nullptr;
}

/** PreadBlock(device, offset, length) - one pread of @length bytes into a new Buffer. */
napi_value PreadBlock(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  uint64_t offset, length;
  FdResource* h = GetHandle(env, args[0], "pread");
  if (h == nullptr || !GetSafeInteger(env, args[1], "offset", &offset) ||
      !GetSafeInteger(env, args[2], "length", &length)) {
    return nullptr;
  }
  if (length > (1ull << 30)) {
    return ThrowRangeError(env, "pread: length " + std::to_string(length) + " exceeds 1 GiB");
  }
  napi_value out;
  void* data;
  if (napi_create_buffer(env, length, &data, &out) != napi_ok) return nullptr;
  if (length == 0) return out;
  ssize_t n;
  do {
    n = pread(h->fd, data, length, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    return ThrowErrno(env, "pread", h, err);
  }
  if (static_cast<uint64_t>(n) != length) return ThrowShort(env, "pread", h, n, length, offset);
  return out;
}

/** PwriteBlock(device, offset, data) - one pwrite of the bytes of a TypedArray or Buffer. */
napi_value PwriteBlock(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  uint64_t offset;
  FdResource* h = GetHandle(env, args[0], "pwrite");
  if (h == nullptr || !GetSafeInteger(env, args[1], "offset", &offset)) return nullptr;
  bool is_typed = false;
  napi_is_typedarray(env, args[2], &is_typed);
  if (!is_typed) return ThrowTypeError(env, "pwrite: data must be a Uint8Array or Buffer");
  napi_typedarray_type type;
  size_t length;
  void* data;
  napi_get_typedarray_info(env, args[2], &type, &length, &data, nullptr, nullptr);
  if (type != napi_uint8_array) {
    return ThrowTypeError(env, "pwrite: data must be a Uint8Array or Buffer");
  }
  if (length == 0) return nullptr;
  ssize_t n;
  do {
    n = pwrite(h->fd, data, length, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    return ThrowErrno(env, "pwrite", h, err);
  }
  if (static_cast<size_t>(n) != length) return ThrowShort(env, "pwrite", h, n, length, offset);
  return nullptr;
}

}  // namespace

void RegisterDevice(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioDeviceInfo", DeviceInfo),
      Method("vfioRegionInfo", RegionInfo),
      Method("vfioIrqInfo", IrqInfo),
      Method("vfioDeviceReset", DeviceReset),
      Method("vfioDeviceResetAsync", DeviceResetAsync),
      Method("pread", Pread),
      Method("pwrite", Pwrite),
      Method("preadBlock", PreadBlock),
      Method("pwriteBlock", PwriteBlock),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
