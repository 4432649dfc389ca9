// How each concept's file adds its functions to the addon's exports: one shape for every table.
#pragma once

#include <node_api.h>

#include <cstddef>

namespace vfio_bridge {

/** Method - an enumerable function @fn named @name on the exports object. */
constexpr napi_property_descriptor Method(const char* name, napi_callback fn) {
  return {name, nullptr, fn, nullptr, nullptr, nullptr, napi_enumerable, nullptr};
}

/** DefineMethods - add @methods (each made with Method) to @exports. */
template <size_t N>
void DefineMethods(napi_env env, napi_value exports, const napi_property_descriptor (&methods)[N]) {
  napi_define_properties(env, exports, N, methods);
}

}  // namespace vfio_bridge
