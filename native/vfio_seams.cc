// The interim VFIO call the KVM path needs before the interrupt layer exists: eventfd triggers for
// a device's interrupts (VFIO_DEVICE_SET_IRQS). Deliberately raw (it takes the device fd number
// lib/vfio exposes); the interrupt API replaces its caller (lib/kvm/vfio-msi.ts).
#include <linux/vfio.h>

#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

/**
 * RawFd - a borrowed fd number wrapped for the error helpers; the caller's object owns the fd.
 * The wrapper lives in thread-local storage, so no call may hold it across another.
 */
FdResource* RawFd(napi_env env, napi_value value, const char* op) {
  static thread_local FdResource borrowed;
  uint32_t fd;
  if (!GetUint32(env, value, "fd", &fd)) return nullptr;
  if (fd > INT32_MAX) {
    ThrowRangeError(env, std::string(op) + ": fd " + std::to_string(fd) + " is not an fd");
    return nullptr;
  }
  borrowed.fd = -1;  // never closed through this wrapper
  borrowed.where = ErrorContext{"fd " + std::to_string(fd), ""};
  borrowed.fd = static_cast<int>(fd);
  return &borrowed;
}

/**
 * SetIrqEventfds(device, index, start, fds) - VFIO_DEVICE_SET_IRQS with ACTION_TRIGGER: an empty
 * @fds disables the index (DATA_NONE, count 0); -1 in @fds leaves that vector without a trigger.
 */
napi_value SetIrqEventfds(napi_env env, napi_callback_info info) {
  Args<4> args(env, info);
  const char* op = "VFIO_DEVICE_SET_IRQS";
  FdResource* h = RawFd(env, args[0], op);
  uint32_t index, start, count;
  bool is_array = false;
  if (h == nullptr || !GetUint32(env, args[1], "index", &index) ||
      !GetUint32(env, args[2], "start", &start)) {
    return nullptr;
  }
  napi_is_array(env, args[3], &is_array);
  if (!is_array) return ThrowTypeError(env, "fds must be an array of numbers");
  napi_get_array_length(env, args[3], &count);
  if (count > 2048) return ThrowRangeError(env, "at most 2048 vectors");
  std::vector<int32_t> fds(count);
  for (uint32_t i = 0; i < count; i++) {
    napi_value e;
    double d;
    napi_get_element(env, args[3], i, &e);
    if (napi_get_value_double(env, e, &d) != napi_ok || d < -1 || d > INT32_MAX ||
        d != (int32_t)d) {
      return ThrowRangeError(env, "fds[" + std::to_string(i) + "] is not an fd or -1");
    }
    fds[i] = static_cast<int32_t>(d);
  }
  std::vector<uint64_t> storage((sizeof(vfio_irq_set) + count * 4 + 7) / 8);
  auto* set = reinterpret_cast<vfio_irq_set*>(storage.data());
  set->argsz = static_cast<uint32_t>(sizeof(vfio_irq_set) + count * 4);
  set->flags = VFIO_IRQ_SET_ACTION_TRIGGER |
               (count == 0 ? VFIO_IRQ_SET_DATA_NONE : VFIO_IRQ_SET_DATA_EVENTFD);
  set->index = index;
  set->start = start;
  set->count = count;
  if (count > 0) std::memcpy(set->data, fds.data(), count * 4);
  int r = Ioctl(h->fd, VFIO_DEVICE_SET_IRQS, set);
  if (r < 0) {
    return ThrowErrno(env, op, h, -r,
                      "index " + std::to_string(index) + ", " + std::to_string(count) + " vectors");
  }
  return nullptr;
}

}  // namespace

void RegisterVfioSeams(Napi::Env env, Napi::Object exports) {
  napi_property_descriptor props[] = {
      {"vfioSetIrqEventfds", nullptr, SetIrqEventfds, nullptr, nullptr, nullptr, napi_enumerable,
       nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

}  // namespace vfio_bridge
