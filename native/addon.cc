#include <napi.h>

static Napi::Value Noop(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("noop", Napi::Function::New(env, Noop, "noop"));
  return exports;
}

NODE_API_MODULE(vfio_bridge, Init)
