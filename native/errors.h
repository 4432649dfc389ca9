// Error reporting. Kernel failures become VfioError objects built by the factory that lib/vfio
// registers (so hints and codes are decided in TypeScript); bad arguments become RangeError or
// TypeError. Every function returns nullptr so callbacks can `return Throw...(...)`.
#pragma once

#include <node_api.h>

#include <string>

namespace vfio_bridge {

/** struct ErrorContext - where a failure happened: a device node path and/or a PCI address. */
struct ErrorContext {
  std::string path;
  std::string bdf;
};

/**
 * ThrowVfioError - throw a VfioError for operation @op.
 * @err: positive errno, or 0 when the failure has no errno (then @code names it).
 * @detail: extra text for the message (may be empty).
 * @code: overrides the code derived from @err ("SIGBUS", "ECLOSED", "ESHORT", ...).
 */
napi_value ThrowVfioError(napi_env env, const char* op, int err, const std::string& detail,
                          const ErrorContext& where, const char* code = nullptr);

/** ThrowRangeError - throw a RangeError with @message. */
napi_value ThrowRangeError(napi_env env, const std::string& message);

/** ThrowTypeError - throw a TypeError with @message. */
napi_value ThrowTypeError(napi_env env, const std::string& message);

/**
 * CallFromLoop - call the JavaScript handler @fn from a libuv callback (an interrupt, a vCPU's
 * hand-off) under @context. A handler that throws is a bug in it, never a guest's doing: the error
 * goes to the process's uncaught-exception path, as it would from Node's own handles.
 */
void CallFromLoop(napi_env env, napi_async_context context, napi_value fn, size_t argc,
                  const napi_value* argv);

}  // namespace vfio_bridge
