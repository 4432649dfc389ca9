// The VFIO device cdev (/dev/vfio/devices/vfioN) with iommufd: binding the device fd to an iommufd
// (after which it is an ordinary VFIO device fd: regions, IRQs, reset), and attaching it to an IOAS
// or HWPT and detaching it again. Binding opens the device in vfio-pci (which enables it and may
// reset it), so it also runs on the thread pool. Which IOAS a device goes to is lib/vfio's choice.
#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"
#include "iommufd_uapi.h"
#include "module.h"

namespace vfio_bridge {
namespace {

using namespace uapi;

constexpr const char* kBindOp = "VFIO_DEVICE_BIND_IOMMUFD";

napi_value Uint(napi_env env, uint32_t v) {
  napi_value out;
  napi_create_uint32(env, v, &out);
  return out;
}

/** Bind(device, iommufd) - VFIO_DEVICE_BIND_IOMMUFD; returns the device's ID in the iommufd. */
napi_value Bind(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  FdResource* d = GetHandle(env, args[0], kBindOp);
  if (d == nullptr) return nullptr;
  FdResource* i = GetHandle(env, args[1], kBindOp);
  if (i == nullptr) return nullptr;
  VfioDeviceBindIommufd req = {};
  req.argsz = sizeof req;
  req.iommufd = i->fd;
  int r = Ioctl(d->fd, kVfioDeviceBindIommufd, &req);
  if (r < 0) return ThrowErrno(env, kBindOp, d, -r);
  return Uint(env, req.out_devid);
}

/**
 * class BindCall - VFIO_DEVICE_BIND_IOMMUFD on the thread pool, on dups of the device fd and the
 * iommufd, so closing either meanwhile cannot hand the kernel another file.
 */
class BindCall : public AsyncCall {
 public:
  explicit BindCall(const FdResource* d) : AsyncCall(kBindOp, d->where) {}

  bool Prepare(napi_env env, const FdResource* d, const FdResource* i) {
    return DupFd(env, d, &device_) && DupFd(env, i, &iommufd_);
  }

  void Run() override {
    req_.argsz = sizeof req_;
    req_.iommufd = iommufd_.get();
    int r = Ioctl(device_.get(), kVfioDeviceBindIommufd, &req_);
    err = r < 0 ? -r : 0;
    device_.Close();
    iommufd_.Close();
  }

  napi_value Settle(napi_env env) override {
    if (err != 0) return ThrowVfioError(env, op, err, "", where);
    return Uint(env, req_.out_devid);
  }

 private:
  OwnedFd device_;
  OwnedFd iommufd_;
  VfioDeviceBindIommufd req_ = {};
};

/** BindAsync(device, iommufd) - a promise of the device's ID in the iommufd. */
napi_value BindAsync(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  FdResource* d = GetHandle(env, args[0], kBindOp);
  if (d == nullptr) return nullptr;
  FdResource* i = GetHandle(env, args[1], kBindOp);
  if (i == nullptr) return nullptr;
  auto* call = new BindCall(d);
  if (!call->Prepare(env, d, i)) return Abandon(env, call);
  return Queue(env, call);
}

/**
 * Attach(device, ptId) - VFIO_DEVICE_ATTACH_IOMMUFD_PT to the IOAS or HWPT @ptId; returns the
 * page table the device is attached to (the HWPT the kernel made for an IOAS, or @ptId itself).
 */
napi_value Attach(napi_env env, napi_callback_info info) {
  const char* op = "VFIO_DEVICE_ATTACH_IOMMUFD_PT";
  Args<2> args(env, info);
  uint32_t pt;
  FdResource* d = GetHandle(env, args[0], op);
  if (d == nullptr || !GetUint32(env, args[1], "ptId", &pt)) return nullptr;
  VfioDeviceAttachIommufdPt req = {};
  req.argsz = sizeof req;
  req.pt_id = pt;
  int r = Ioctl(d->fd, kVfioDeviceAttachIommufdPt, &req);
  if (r < 0) return ThrowErrno(env, op, d, -r, "object " + std::to_string(pt));
  return Uint(env, req.pt_id);
}

/** Detach(device) - VFIO_DEVICE_DETACH_IOMMUFD_PT: the device blocks DMA until attached again. */
napi_value Detach(napi_env env, napi_callback_info info) {
  const char* op = "VFIO_DEVICE_DETACH_IOMMUFD_PT";
  Args<1> args(env, info);
  FdResource* d = GetHandle(env, args[0], op);
  if (d == nullptr) return nullptr;
  VfioDeviceDetachIommufdPt req = {};
  req.argsz = sizeof req;
  int r = Ioctl(d->fd, kVfioDeviceDetachIommufdPt, &req);
  if (r < 0) return ThrowErrno(env, op, d, -r);
  return nullptr;
}

}  // namespace

void RegisterDeviceCdev(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioDeviceBindIommufd", Bind),
      Method("vfioDeviceBindIommufdAsync", BindAsync),
      Method("vfioDeviceAttachIommufdPt", Attach),
      Method("vfioDeviceDetachIommufdPt", Detach),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
