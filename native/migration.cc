// Device migration, version 2: VFIO_DEVICE_FEATURE (raw, for the GET/PROBE features whose data is
// plain bytes), the state change that may hand back a data fd (wrapped as a handle at once, so it
// cannot leak), and DMA logging start and report, which pass user pointers. The data fd itself is
// migration_data.cc's. The uAPI is newer than the system
// headers, so it is spelled out here; what the states mean, and which to ask for, is lib/vfio's.
#include <linux/vfio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

// linux/vfio.h (5.18 and later); VB_ names so newer system headers cannot clash.
constexpr unsigned long kDeviceFeature = _IO(VFIO_TYPE, VFIO_BASE + 17);
constexpr uint32_t kFeatureMask = 0xffff;
constexpr uint32_t kFeatureGet = 1u << 16;
constexpr uint32_t kFeatureSet = 1u << 17;
constexpr uint32_t kFeatureProbe = 1u << 18;
constexpr uint32_t kFeatureMigDeviceState = 2;
constexpr uint32_t kFeatureDmaLoggingStart = 6;
constexpr uint32_t kFeatureDmaLoggingReport = 8;
/** The largest feature payload the raw call passes (the migration ones are 8 bytes). */
constexpr uint32_t kMaxFeatureData = 4096;

constexpr const char* kFeatureOp = "VFIO_DEVICE_FEATURE";
constexpr const char* kSetStateOp = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE";

/** struct vfio_device_feature with room for @size bytes of data, 8-byte aligned. */
class FeatureRequest {
 public:
  FeatureRequest(uint32_t flags, uint32_t size) : storage_((8 + size + 7) / 8, 0) {
    uint32_t argsz = 8 + size;
    std::memcpy(bytes(), &argsz, 4);
    std::memcpy(bytes() + 4, &flags, 4);
  }
  uint8_t* bytes() { return reinterpret_cast<uint8_t*>(storage_.data()); }
  uint8_t* data() { return bytes() + 8; }

 private:
  std::vector<uint64_t> storage_;
};

/** GetBytes - the bytes of a Uint8Array (or undefined: none); false after throwing. */
bool GetBytes(napi_env env, napi_value value, const char* what, const uint8_t** data,
              size_t* length) {
  napi_valuetype t;
  napi_typeof(env, value, &t);
  *data = nullptr;
  *length = 0;
  if (t == napi_undefined) return true;
  bool is_typed = false;
  napi_is_typedarray(env, value, &is_typed);
  napi_typedarray_type type;
  void* p = nullptr;
  if (is_typed) napi_get_typedarray_info(env, value, &type, length, &p, nullptr, nullptr);
  if (!is_typed || type != napi_uint8_array) {
    ThrowTypeError(env, std::string(what) + " must be a Uint8Array or Buffer");
    return false;
  }
  *data = static_cast<const uint8_t*>(p);
  return true;
}

/** GetBigU64s - the elements of a BigUint64Array; false after throwing. */
bool GetBigU64s(napi_env env, napi_value value, const char* what, uint64_t** data, size_t* count) {
  bool is_typed = false;
  napi_is_typedarray(env, value, &is_typed);
  napi_typedarray_type type;
  void* p = nullptr;
  *count = 0;
  if (is_typed) napi_get_typedarray_info(env, value, &type, count, &p, nullptr, nullptr);
  if (!is_typed || type != napi_biguint64_array) {
    ThrowTypeError(env, std::string(what) + " must be a BigUint64Array");
    return false;
  }
  *data = static_cast<uint64_t*>(p);
  return true;
}

/** GetBigU64 - a bigint in [0, 2^64); false after throwing. */
bool GetBigU64(napi_env env, napi_value value, const char* what, uint64_t* out) {
  bool lossless = false;
  if (napi_get_value_bigint_uint64(env, value, out, &lossless) != napi_ok) {
    ThrowTypeError(env, std::string(what) + " must be a bigint");
    return false;
  }
  if (!lossless) {
    ThrowRangeError(env, std::string(what) + " does not fit in 64 bits unsigned");
    return false;
  }
  return true;
}

/**
 * DeviceFeature(device, flags, data?, outSize) - VFIO_DEVICE_FEATURE with @data (or @outSize zero
 * bytes) after the header; returns the data part as the kernel left it. The state change is not
 * made here: it may return a data fd (MigSetState makes it).
 */
napi_value DeviceFeature(napi_env env, napi_callback_info info) {
  Args<4> args(env, info);
  uint32_t flags, out_size;
  const uint8_t* in;
  size_t in_size;
  FdResource* h = GetHandle(env, args[0], kFeatureOp);
  if (h == nullptr || !GetUint32(env, args[1], "flags", &flags) ||
      !GetBytes(env, args[2], "data", &in, &in_size) ||
      !GetUint32(env, args[3], "outSize", &out_size)) {
    return nullptr;
  }
  if ((flags & kFeatureMask) == kFeatureMigDeviceState && (flags & kFeatureSet) != 0 &&
      (flags & kFeatureProbe) == 0) {
    return ThrowTypeError(env, "VFIO_DEVICE_FEATURE: set the migration state with vfioMigSetState");
  }
  size_t size = in_size > out_size ? in_size : out_size;
  if (size > kMaxFeatureData) {
    return ThrowRangeError(env, "VFIO_DEVICE_FEATURE: " + std::to_string(size) +
                                    " bytes of data exceed " + std::to_string(kMaxFeatureData));
  }
  FeatureRequest req(flags, static_cast<uint32_t>(size));
  if (in_size > 0) std::memcpy(req.data(), in, in_size);
  int r = Ioctl(h->fd, kDeviceFeature, req.bytes());
  if (r < 0) return ThrowErrno(env, kFeatureOp, h, -r);
  napi_value out;
  void* copy;
  napi_create_buffer_copy(env, size, req.data(), &copy, &out);
  return out;
}

/** SetStateResult - [state asked for, data fd handle or null]; @device names the device. */
napi_value SetStateResult(napi_env env, const ErrorContext& device, uint32_t state, int32_t fd) {
  napi_value out, s, handle;
  napi_create_array_with_length(env, 2, &out);
  napi_create_uint32(env, state, &s);
  if (fd >= 0) {
    // The data fd's errors name the device it belongs to.
    handle = NewHandle(env, fd, ErrorContext{"migration data fd of " + device.path, device.bdf});
    if (handle == nullptr) return nullptr;
  } else {
    napi_get_null(env, &handle);
  }
  napi_set_element(env, out, 0, s);
  napi_set_element(env, out, 1, handle);
  return out;
}

/** MigSetState(device, state) - the state change; returns [state, data fd handle or null]. */
napi_value MigSetState(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  uint32_t state;
  FdResource* h = GetHandle(env, args[0], kSetStateOp);
  if (h == nullptr || !GetUint32(env, args[1], "state", &state)) return nullptr;
  FeatureRequest req(kFeatureSet | kFeatureMigDeviceState, 8);
  std::memcpy(req.data(), &state, 4);
  int32_t no_fd = -1;
  std::memcpy(req.data() + 4, &no_fd, 4);
  int r = Ioctl(h->fd, kDeviceFeature, req.bytes());
  if (r < 0) return ThrowErrno(env, kSetStateOp, h, -r);
  int32_t fd;
  std::memcpy(&fd, req.data() + 4, 4);
  return SetStateResult(env, h->where, state, fd);
}

/** class SetStateCall - the state change on the thread pool (a real device's may take seconds). */
class SetStateCall : public AsyncCall {
 public:
  SetStateCall(const FdResource* h, uint32_t state)
      : AsyncCall(kSetStateOp, h->where), state_(state) {}
  // A data fd whose promise never settled (the environment went away first) is closed here.
  ~SetStateCall() override {
    if (fd_ >= 0) close(fd_);
  }

  bool Prepare(napi_env env, const FdResource* h) { return DupFd(env, h, &device_); }

  void Run() override {
    FeatureRequest req(kFeatureSet | kFeatureMigDeviceState, 8);
    std::memcpy(req.data(), &state_, 4);
    int32_t no_fd = -1;
    std::memcpy(req.data() + 4, &no_fd, 4);
    int r = Ioctl(device_.get(), kDeviceFeature, req.bytes());
    device_.Close();
    err = r < 0 ? -r : 0;
    if (r >= 0) std::memcpy(&fd_, req.data() + 4, 4);
  }

  napi_value Settle(napi_env env) override {
    if (err != 0) return AsyncCall::Settle(env);
    napi_value out = SetStateResult(env, where, state_, fd_);
    if (out != nullptr) fd_ = -1;  // the handle owns it now
    return out;
  }

 private:
  OwnedFd device_;
  uint32_t state_;
  int32_t fd_ = -1;
};

/** MigSetStateAsync(device, state) - a promise of [state, data fd handle or null]. */
napi_value MigSetStateAsync(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  uint32_t state;
  FdResource* h = GetHandle(env, args[0], kSetStateOp);
  if (h == nullptr || !GetUint32(env, args[1], "state", &state)) return nullptr;
  auto* call = new SetStateCall(h, state);
  if (!call->Prepare(env, h)) return Abandon(env, call);
  return Queue(env, call);
}

/**
 * DmaLoggingStart(device, pageSize, ranges) - DMA_LOGGING_START over @ranges (iova, length pairs
 * in a BigUint64Array); returns the page size the device chose.
 */
napi_value DmaLoggingStart(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  const char* op = "VFIO_DEVICE_FEATURE_DMA_LOGGING_START";
  uint64_t page_size;
  uint64_t* ranges;
  size_t count;
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr || !GetBigU64(env, args[1], "pageSize", &page_size) ||
      !GetBigU64s(env, args[2], "ranges", &ranges, &count)) {
    return nullptr;
  }
  if (count % 2 != 0) return ThrowRangeError(env, "ranges must hold (iova, length) pairs");
  FeatureRequest req(kFeatureSet | kFeatureDmaLoggingStart, 24);
  uint32_t num = static_cast<uint32_t>(count / 2);
  uint64_t pointer = reinterpret_cast<uintptr_t>(ranges);
  std::memcpy(req.data(), &page_size, 8);
  std::memcpy(req.data() + 8, &num, 4);
  std::memcpy(req.data() + 16, &pointer, 8);
  int r = Ioctl(h->fd, kDeviceFeature, req.bytes());
  if (r < 0) return ThrowErrno(env, op, h, -r);
  std::memcpy(&page_size, req.data(), 8);
  napi_value out;
  napi_create_bigint_uint64(env, page_size, &out);
  return out;
}

/** DmaLoggingReport(device, iova, length, pageSize, bitmap) - DMA_LOGGING_REPORT into @bitmap. */
napi_value DmaLoggingReport(napi_env env, napi_callback_info info) {
  Args<5> args(env, info);
  const char* op = "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT";
  uint64_t iova, length, page_size;
  uint64_t* bitmap;
  size_t words;
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr || !GetBigU64(env, args[1], "iova", &iova) ||
      !GetBigU64(env, args[2], "length", &length) ||
      !GetBigU64(env, args[3], "pageSize", &page_size) ||
      !GetBigU64s(env, args[4], "bitmap", &bitmap, &words)) {
    return nullptr;
  }
  // The kernel writes one bit per page of the range: the bitmap must hold them all.
  if (page_size == 0 || (length / page_size + 63) / 64 > words) {
    return ThrowRangeError(env, "DMA logging report: the bitmap is too small for the range");
  }
  FeatureRequest req(kFeatureGet | kFeatureDmaLoggingReport, 32);
  uint64_t pointer = reinterpret_cast<uintptr_t>(bitmap);
  std::memcpy(req.data(), &iova, 8);
  std::memcpy(req.data() + 8, &length, 8);
  std::memcpy(req.data() + 16, &page_size, 8);
  std::memcpy(req.data() + 24, &pointer, 8);
  int r = Ioctl(h->fd, kDeviceFeature, req.bytes());
  if (r < 0) return ThrowErrno(env, op, h, -r);
  return nullptr;
}

}  // namespace

void RegisterMigration(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioDeviceFeature", DeviceFeature),
      Method("vfioMigSetState", MigSetState),
      Method("vfioMigSetStateAsync", MigSetStateAsync),
      Method("vfioDmaLoggingStart", DmaLoggingStart),
      Method("vfioDmaLoggingReport", DmaLoggingReport),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
