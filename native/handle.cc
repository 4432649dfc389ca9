#include "handle.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "tagged_external.h"

namespace vfio_bridge {
namespace {

// Distinguishes our handles from any other external in the process.
constexpr napi_type_tag kHandleTag = {0x7666696f2d627269ULL, 0x6467652d68616e64ULL};

void FinalizeHandle(napi_env, void* data, void*) {
  ReleaseAndForget(static_cast<FdResource*>(data));
}

FdResource* Unwrap(napi_env env, napi_value value) {
  return static_cast<FdResource*>(TaggedExternal(env, value, kHandleTag));
}

/** OpenFd(path) - open @path read-write, close-on-exec; returns a handle. */
napi_value OpenFd(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  std::string path;
  if (!GetString(env, args[0], "path", &path)) return nullptr;
  int fd;
  do {
    fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int err = errno;  // before the error's strings are allocated, which may overwrite errno
    return ThrowVfioError(env, "open", err, "", ErrorContext{path, ""});
  }
  return NewHandle(env, fd, ErrorContext{path, ""});
}

/** CloseFd(handle) - close the fd now; idempotent. Errors from close(2) are reported. */
napi_value CloseFd(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  FdResource* r = Unwrap(env, args[0]);
  if (r == nullptr) return ThrowTypeError(env, "closeFd expects a vfio-bridge handle");
  if (r->fd >= 0) {
    int fd = r->fd;
    r->fd = -1;
    // Linux frees the descriptor even when close() fails, so never retry (not even on EINTR).
    int err = close(fd) == 0 ? 0 : errno;
    r->Closed();
    if (err != 0 && err != EINTR) return ThrowErrno(env, "close", r, err);
  }
  return nullptr;
}

/** class CloseCall - one close(2) of a descriptor the handle already gave up, on the thread pool.
 */
class CloseCall : public AsyncCall {
 public:
  CloseCall(int fd, const ErrorContext& where) : AsyncCall("close", where), fd_(fd) {}
  // A call that never ran (it could not be queued) still closes its descriptor.
  ~CloseCall() override {
    if (fd_ >= 0) close(fd_);
  }

  void Run() override {
    // Linux frees the descriptor even when close() fails, so never retry (not even on EINTR).
    if (fd_ >= 0 && close(fd_) != 0 && errno != EINTR) err = errno;
    fd_ = -1;
  }

 private:
  int fd_;
};

/**
 * CloseFdAsync(handle) - close the fd on the libuv thread pool (closing a VFIO device fd makes the
 * kernel disable and reset the device, which takes it tens of ms). The handle is closed at once:
 * its number is gone from it before the promise is made. The close is queued in order behind the
 * calls queued on the handle before it (QueueInOrder), whose duplicates of the fd are closed as
 * each ends: when the promise settles the file is gone, and a VFIO device is released for the
 * next open. Idempotent: closed already resolves, once those calls are done.
 */
napi_value CloseFdAsync(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  FdResource* r = Unwrap(env, args[0]);
  if (r == nullptr) return ThrowTypeError(env, "closeFdAsync expects a vfio-bridge handle");
  // Taken from the handle at once: its number is gone from it before the promise is made.
  int fd = r->fd;
  r->fd = -1;
  if (fd >= 0) r->Closed();
  return QueueInOrder(env, new CloseCall(fd, r->where), r);
}

/** FdOf(handle) - the fd number, or -1 once closed. */
napi_value FdOf(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  FdResource* r = Unwrap(env, args[0]);
  if (r == nullptr) return ThrowTypeError(env, "fdOf expects a vfio-bridge handle");
  napi_value out;
  napi_create_int32(env, r->fd, &out);
  return out;
}

}  // namespace

void FdResource::Release() {
  if (fd >= 0) {
    close(fd);
    fd = -1;
    Closed();
  }
}

napi_value NewHandle(napi_env env, int fd, ErrorContext where) {
  auto* r = new FdResource();
  r->fd = fd;
  r->where = std::move(where);
  return WrapHandle(env, r);
}

napi_value WrapHandle(napi_env env, FdResource* r) {
  napi_value external;
  if (napi_create_external(env, r, FinalizeHandle, nullptr, &external) != napi_ok) {
    r->Release();
    delete r;
    return nullptr;
  }
  ModuleData::Get(env)->Track(r);
  napi_type_tag_object(env, external, &kHandleTag);
  return external;
}

FdResource* GetHandle(napi_env env, napi_value value, const char* op) {
  FdResource* r = Unwrap(env, value);
  if (r == nullptr) {
    ThrowTypeError(env, std::string(op) + " expects a vfio-bridge handle");
    return nullptr;
  }
  if (r->fd < 0) {
    ThrowVfioError(env, op, 0, "the handle is closed", r->where, "ECLOSED");
    return nullptr;
  }
  return r;
}

napi_value ThrowErrno(napi_env env, const char* op, const FdResource* handle, int err,
                      const std::string& detail) {
  return ThrowVfioError(env, op, err, detail, handle->where);
}

void RegisterHandles(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("openFd", OpenFd),
      Method("closeFd", CloseFd),
      Method("closeFdAsync", CloseFdAsync),
      Method("fdOf", FdOf),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
