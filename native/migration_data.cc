// The migration data fd: one read() or write() at a time on the thread pool, each on a duplicate of
// the fd (so a close meanwhile cannot hand the call another file under the same number), and
// VFIO_MIG_GET_PRECOPY_INFO. What a read of nothing means (the end, or "nothing for now" in
// PRE_COPY) is lib/vfio's to say.
#include <linux/vfio.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

// linux/vfio.h (6.2 and later), newer than the system headers.
constexpr unsigned long kMigGetPrecopyInfo = _IO(VFIO_TYPE, VFIO_BASE + 21);
/** The largest single read or write of the data fd. */
constexpr uint64_t kMaxChunk = 64ull << 20;

/** GetBytes - the bytes of a Uint8Array; false after throwing. */
bool GetBytes(napi_env env, napi_value value, const uint8_t** data, size_t* length) {
  bool is_typed = false;
  napi_is_typedarray(env, value, &is_typed);
  napi_typedarray_type type;
  void* p = nullptr;
  *length = 0;
  if (is_typed) napi_get_typedarray_info(env, value, &type, length, &p, nullptr, nullptr);
  if (!is_typed || type != napi_uint8_array) {
    ThrowTypeError(env, "data must be a Uint8Array or Buffer");
    return false;
  }
  *data = static_cast<const uint8_t*>(p);
  return true;
}

/** class DataReadCall - one read() of the data fd on the thread pool. */
class DataReadCall : public AsyncCall {
 public:
  DataReadCall(const FdResource* h, size_t length) : AsyncCall("read", h->where), buffer_(length) {}

  bool Prepare(napi_env env, const FdResource* h) { return DupFd(env, h, &fd_); }

  void Run() override {
    ssize_t n;
    do {
      n = read(fd_.get(), buffer_.data(), buffer_.size());
    } while (n < 0 && errno == EINTR);
    err = n < 0 ? errno : 0;
    done_ = n < 0 ? 0 : static_cast<size_t>(n);
    fd_.Close();
  }

  napi_value Settle(napi_env env) override {
    if (err != 0) return AsyncCall::Settle(env);
    napi_value out;
    void* copy;
    napi_create_buffer_copy(env, done_, buffer_.data(), &copy, &out);
    return out;
  }

 private:
  OwnedFd fd_;
  std::vector<uint8_t> buffer_;
  size_t done_ = 0;
};

bool GetChunk(napi_env env, napi_value value, uint64_t* out) {
  if (!GetSafeInteger(env, value, "length", out)) return false;
  if (*out == 0 || *out > kMaxChunk) {
    ThrowRangeError(env, "data fd: length " + std::to_string(*out) + " is not in [1, " +
                             std::to_string(kMaxChunk) + "]");
    return false;
  }
  return true;
}

/** MigDataRead(dataFd, length) - a promise of the bytes one read() returned (none: end). */
napi_value MigDataRead(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  uint64_t length;
  FdResource* h = GetHandle(env, args[0], "read");
  if (h == nullptr || !GetChunk(env, args[1], &length)) return nullptr;
  auto* call = new DataReadCall(h, static_cast<size_t>(length));
  if (!call->Prepare(env, h)) return Abandon(env, call);
  return Queue(env, call);
}

/** class DataWriteCall - one write() to the data fd on the thread pool; holds the bytes. */
class DataWriteCall : public AsyncCall {
 public:
  DataWriteCall(const FdResource* h, const uint8_t* data, size_t length)
      : AsyncCall("write", h->where), data_(data), length_(length) {}

  bool Prepare(napi_env env, const FdResource* h, napi_value bytes) {
    return DupFd(env, h, &fd_) && Hold(env, bytes);
  }

  void Run() override {
    ssize_t n;
    do {
      n = write(fd_.get(), data_, length_);
    } while (n < 0 && errno == EINTR);
    err = n < 0 ? errno : 0;
    done_ = n < 0 ? 0 : static_cast<size_t>(n);
    fd_.Close();
  }

  napi_value Settle(napi_env env) override {
    if (err != 0) return AsyncCall::Settle(env);
    napi_value out;
    napi_create_double(env, static_cast<double>(done_), &out);
    return out;
  }

 private:
  OwnedFd fd_;
  const uint8_t* data_;
  size_t length_;
  size_t done_ = 0;
};

/** MigDataWrite(dataFd, bytes) - a promise of how many bytes one write() took. */
napi_value MigDataWrite(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  const uint8_t* data;
  size_t length;
  FdResource* h = GetHandle(env, args[0], "write");
  if (h == nullptr || !GetBytes(env, args[1], &data, &length)) return nullptr;
  if (length == 0 || length > kMaxChunk) {
    return ThrowRangeError(env, "data fd: a write of " + std::to_string(length) +
                                    " bytes is not in [1, " + std::to_string(kMaxChunk) + "]");
  }
  auto* call = new DataWriteCall(h, data, length);
  if (!call->Prepare(env, h, args[1])) return Abandon(env, call);
  return Queue(env, call);
}

/** MigPrecopyInfo(dataFd) - VFIO_MIG_GET_PRECOPY_INFO; the whole struct as a Buffer. */
napi_value MigPrecopyInfo(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  const char* op = "VFIO_MIG_GET_PRECOPY_INFO";
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr) return nullptr;
  uint64_t storage[3] = {0, 0, 0};  // u32 argsz, u32 flags, u64 initial_bytes, u64 dirty_bytes
  uint32_t argsz = sizeof storage;
  std::memcpy(storage, &argsz, 4);
  int r = Ioctl(h->fd, kMigGetPrecopyInfo, storage);
  if (r < 0) return ThrowErrno(env, op, h, -r);
  napi_value out;
  void* copy;
  napi_create_buffer_copy(env, sizeof storage, storage, &copy, &out);
  return out;
}

}  // namespace

void RegisterMigrationData(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("migDataRead", MigDataRead),
      Method("migDataWrite", MigDataWrite),
      Method("migPrecopyInfo", MigPrecopyInfo),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
