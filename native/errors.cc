#include "errors.h"

#include <string.h>

#include "module.h"

namespace vfio_bridge {
namespace {

napi_value String(napi_env env, const std::string& s) {
  napi_value v;
  napi_create_string_utf8(env, s.data(), s.size(), &v);
  return v;
}

napi_value Undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

napi_value OrUndefined(napi_env env, const std::string& s) {
  return s.empty() ? Undefined(env) : String(env, s);
}

// Without a registered factory (lib/vfio not loaded), still throw an Error carrying every field.
napi_value FallbackError(napi_env env, const char* kind, napi_value args[7]) {
  napi_value error;
  if (strcmp(kind, "RangeError") == 0) {
    napi_create_range_error(env, nullptr, args[4], &error);
  } else if (strcmp(kind, "TypeError") == 0) {
    napi_create_type_error(env, nullptr, args[4], &error);
  } else {
    napi_create_error(env, nullptr, args[4], &error);
    static const char* const kNames[] = {"op", "code", "errno", nullptr, "path", "bdf"};
    for (int i = 0; i < 6; i++) {
      if (kNames[i] != nullptr) napi_set_named_property(env, error, kNames[i], args[i + 1]);
    }
  }
  return error;
}

// Errors are built by the factory so that they belong to the realm that loaded lib/vfio: a
// RangeError made here would fail `instanceof RangeError` in a vm context (jest, for one).
napi_value Throw(napi_env env, const char* kind, const char* op, int err, const char* code,
                 const std::string& message, const ErrorContext& where) {
  napi_value args[7];
  args[0] = String(env, kind);
  args[1] = String(env, op);
  args[2] = code != nullptr ? String(env, code) : Undefined(env);
  if (err != 0) {
    napi_create_int32(env, err, &args[3]);
  } else {
    args[3] = Undefined(env);
  }
  args[4] = String(env, message);
  args[5] = OrUndefined(env, where.path);
  args[6] = OrUndefined(env, where.bdf);

  ModuleData* module = ModuleData::Get(env);
  napi_value error = nullptr;
  if (module != nullptr && !module->error_factory.IsEmpty()) {
    napi_value global;
    napi_get_global(env, &global);
    if (napi_call_function(env, global, module->error_factory.Value(), 7, args, &error) !=
        napi_ok) {
      return nullptr;  // the factory threw; that exception propagates
    }
  } else {
    error = FallbackError(env, kind, args);
  }
  napi_throw(env, error);
  return nullptr;
}

/**
 * SetErrorFactory - register (kind, op, code, errno, message, path, bdf) => Error for this env;
 * kind is "VfioError", "RangeError" or "TypeError".
 */
Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) {
    ThrowTypeError(info.Env(), "setErrorFactory expects a function");
    return Napi::Value();
  }
  ModuleData::Get(info.Env())->error_factory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace

napi_value ThrowVfioError(napi_env env, const char* op, int err, const std::string& detail,
                          const ErrorContext& where, const char* code) {
  std::string message = op;
  if (err != 0) {
    message += " failed: ";
    message += strerror(err);
  } else {
    message += " failed";
  }
  if (!detail.empty()) message += " (" + detail + ")";
  if (!where.bdf.empty()) message += " [" + where.bdf + "]";
  if (!where.path.empty()) message += " [" + where.path + "]";
  return Throw(env, "VfioError", op, err, code, message, where);
}

napi_value ThrowRangeError(napi_env env, const std::string& message) {
  return Throw(env, "RangeError", "", 0, nullptr, message, ErrorContext{});
}

napi_value ThrowTypeError(napi_env env, const std::string& message) {
  return Throw(env, "TypeError", "", 0, nullptr, message, ErrorContext{});
}

void RegisterErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorFactory", Napi::Function::New(env, SetErrorFactory, "setErrorFactory"));
}

void CallFromLoop(napi_env env, napi_async_context context, napi_value fn, size_t argc,
                  const napi_value* argv) {
  napi_value recv, result;
  napi_get_global(env, &recv);
  if (napi_make_callback(env, context, recv, fn, argc, argv, &result) == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error);
  }
}

}  // namespace vfio_bridge
