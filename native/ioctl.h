// ioctl helpers shared by container, group and device.
#pragma once

#include <errno.h>
#include <node_api.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "args.h"
#include "handle.h"

namespace vfio_bridge {

/** Ioctl - ioctl(2), retried on EINTR. Returns the result, or -errno. */
inline int Ioctl(int fd, unsigned long request, void* arg) {
  int r;
  do {
    r = ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : r;
}

/** IoctlValue - for the VFIO ioctls that take an integer argument rather than a pointer. */
inline int IoctlValue(int fd, unsigned long request, unsigned long arg) {
  int r;
  do {
    r = ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : r;
}

/**
 * ValueIoctl - the whole of a callback (handle[, value]) for an ioctl that takes an integer
 * argument: the handle checked, the argument read as a uint32 named @what (nullptr: the ioctl takes
 * none, 0 is passed), the ioctl's errno thrown as @op's. Returns the ioctl's result as a number,
 * or undefined when @returns is false.
 */
inline napi_value ValueIoctl(napi_env env, napi_callback_info info, unsigned long request,
                             const char* op, const char* what, bool returns = true) {
  Args<2> args(env, info);
  FdResource* h = GetHandle(env, args[0], op);
  uint32_t arg = 0;
  if (h == nullptr || (what != nullptr && !GetUint32(env, args[1], what, &arg))) return nullptr;
  int r = IoctlValue(h->fd, request, arg);
  if (r < 0) return ThrowErrno(env, op, h, -r);
  if (!returns) return nullptr;
  napi_value out;
  napi_create_int32(env, r, &out);
  return out;
}

/** Largest info buffer we accept when the kernel asks for more room (argsz). */
constexpr uint32_t kMaxInfoSize = 1u << 20;

/**
 * GetInfo - run an info ioctl whose struct starts with argsz and may carry a capability chain:
 * call with @minsz, and while the kernel reports a larger argsz, grow the buffer and retry.
 * @index_offset: where to store @index (0 = no index). Returns a Buffer with the struct and its
 * capabilities, or nullptr after throwing.
 */
inline napi_value GetInfo(napi_env env, FdResource* h, unsigned long request, const char* op,
                          uint32_t minsz, size_t index_offset, uint32_t index) {
  uint32_t size = minsz;
  std::vector<uint64_t> storage;  // 8-byte aligned, as the kernel structs expect
  for (int attempt = 0; attempt < 8; attempt++) {
    storage.assign((size + 7) / 8, 0);
    auto* bytes = reinterpret_cast<uint8_t*>(storage.data());
    std::memcpy(bytes, &size, sizeof size);
    if (index_offset != 0) std::memcpy(bytes + index_offset, &index, sizeof index);
    int r = Ioctl(h->fd, request, bytes);
    if (r < 0) return ThrowErrno(env, op, h, -r);
    uint32_t wanted;
    std::memcpy(&wanted, bytes, sizeof wanted);
    if (wanted <= size) {
      napi_value out;
      void* data;
      napi_create_buffer_copy(env, size, bytes, &data, &out);
      return out;
    }
    if (wanted > kMaxInfoSize) {
      return ThrowVfioError(env, op, EOVERFLOW,
                            "kernel asked for " + std::to_string(wanted) + " bytes", h->where);
    }
    size = wanted;
  }
  return ThrowVfioError(env, op, EAGAIN, "argsz kept growing", h->where);
}

}  // namespace vfio_bridge
