// Argument conversion shared by the callbacks. Each helper throws (TypeError for a wrong type,
// RangeError for a bad value) and returns false, so callers simply `return nullptr`.
#pragma once

#include <node_api.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "errors.h"

namespace vfio_bridge {

/** kMaxSafeInteger - Number.MAX_SAFE_INTEGER; offsets and sizes beyond it are not exact. */
constexpr double kMaxSafeInteger = 9007199254740991.0;

/**
 * GetSafeInteger - read @value as an exact non-negative integer no larger than MAX_SAFE_INTEGER.
 * @what: the argument's name, for the error message.
 */
inline bool GetSafeInteger(napi_env env, napi_value value, const char* what, uint64_t* out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok) {
    ThrowTypeError(env, std::string(what) + " must be a number");
    return false;
  }
  if (!(d >= 0) || d > kMaxSafeInteger || std::trunc(d) != d) {
    std::string message = std::string(what) + " " + std::to_string(d) +
                          " is not an integer in [0, Number.MAX_SAFE_INTEGER]";
    ThrowRangeError(env, message);
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

/** GetUint32 - read @value as an integer in [0, 2^32). */
inline bool GetUint32(napi_env env, napi_value value, const char* what, uint32_t* out) {
  uint64_t v;
  if (!GetSafeInteger(env, value, what, &v)) return false;
  if (v > UINT32_MAX) {
    std::string message = std::string(what) + " " + std::to_string(v) + " exceeds 2^32 - 1";
    ThrowRangeError(env, message);
    return false;
  }
  *out = static_cast<uint32_t>(v);
  return true;
}

/** GetString - read @value as a UTF-8 string. */
inline bool GetString(napi_env env, napi_value value, const char* what, std::string* out) {
  size_t len;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &len) != napi_ok) {
    ThrowTypeError(env, std::string(what) + " must be a string");
    return false;
  }
  out->resize(len);
  napi_get_value_string_utf8(env, value, out->data(), len + 1, &len);
  return true;
}

/** Args - fetch up to N arguments; missing ones are undefined. */
template <size_t N>
struct Args {
  napi_value argv[N];
  size_t argc = N;
  void* data = nullptr;
  Args(napi_env env, napi_callback_info info) {
    napi_get_cb_info(env, info, &argc, argv, nullptr, &data);
    for (size_t i = argc; i < N; i++) napi_get_undefined(env, &argv[i]);
  }
  napi_value operator[](size_t i) const { return argv[i]; }
};

}  // namespace vfio_bridge
