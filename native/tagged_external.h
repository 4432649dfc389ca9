// Type-tagged externals: how every handle the addon gives JavaScript proves its kind when it comes
// back. Each kind has its own napi_type_tag; a value of another kind, or no external at all, fails.
#pragma once

#include <node_api.h>

#include <string>

#include "errors.h"

namespace vfio_bridge {

/**
 * TaggedExternal - the pointer inside @value when it is an external tagged @tag, else nullptr.
 * Throws nothing: the caller says what it expected.
 */
inline void* TaggedExternal(napi_env env, napi_value value, const napi_type_tag& tag) {
  napi_valuetype type;
  bool tagged = false;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, value, &tag, &tagged) != napi_ok || !tagged) {
    return nullptr;
  }
  void* data = nullptr;
  napi_get_value_external(env, value, &data);
  return data;
}

/**
 * UnwrapShared - the resource of kind @tag behind @value whose `core` (the part it shares with
 * other threads) is still held, or nullptr after throwing: TypeError "@op expects @a_what handle"
 * for another value, VfioError ECLOSED "the @what is closed" once closed.
 */
template <class T>
T* UnwrapShared(napi_env env, napi_value value, const napi_type_tag& tag, const char* op,
                const char* a_what, const char* what) {
  auto* r = static_cast<T*>(TaggedExternal(env, value, tag));
  if (r == nullptr) {
    ThrowTypeError(env, std::string(op) + " expects " + a_what + " handle");
    return nullptr;
  }
  if (!r->core) {
    ThrowVfioError(env, op, 0, std::string("the ") + what + " is closed", ErrorContext{},
                   "ECLOSED");
    return nullptr;
  }
  return r;
}

}  // namespace vfio_bridge
