// Byte sinks (see byte_sink.h): the shared core, its wake-up on the loop, and the JavaScript side.
#include "byte_sink.h"

#include <string>
#include <utility>

#include "args.h"
#include "errors.h"
#include "exports.h"
#include "loop_queue.h"
#include "module.h"
#include "tagged_external.h"

namespace vfio_bridge {

/**
 * class SinkWaker - wakes JavaScript when a sink that was empty gets a byte. Freed once its
 * handle is closed; the core it holds outlives it in whatever snapshot still points at it.
 */
class SinkWaker : public LoopQueue {
 public:
  explicit SinkWaker(std::shared_ptr<SinkCore> core) : core_(std::move(core)) {}

 protected:
  void Deliver(napi_env env, napi_value fn, napi_async_context context, void*) override {
    CallFromLoop(env, context, fn, 0, nullptr);
  }
  void Drop(void*) override {}
  void Teardown() override {
    if (core_->Detach() == this) Close();
  }
  void Closed() override { delete this; }

 private:
  std::shared_ptr<SinkCore> core_;
};

bool SinkCore::Append(uint8_t b) {
  std::lock_guard<std::mutex> lock(mu_);
  if (waker_ == nullptr || bytes_.size() >= kLimit) return false;
  bytes_.push_back(static_cast<char>(b));
  if (!woken_) {
    woken_ = true;
    waker_->Post(nullptr);
  }
  return true;
}

std::string SinkCore::Take() {
  std::lock_guard<std::mutex> lock(mu_);
  woken_ = false;
  std::string out;
  out.swap(bytes_);
  return out;
}

SinkWaker* SinkCore::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(waker_, nullptr);
}

void SinkCore::Attach(SinkWaker* w) {
  std::lock_guard<std::mutex> lock(mu_);
  waker_ = w;
}

namespace {

constexpr napi_type_tag kByteSinkTag = {0x7666696f2d627269ULL, 0x6467652d73696e6bULL};

/** class ByteSinkResource - the environment's owner of a sink: closing it stops the wake-ups. */
class ByteSinkResource : public Resource {
 public:
  void Release() override {
    if (!core) return;
    // Bytes appended from now on are refused: the vCPU thread hands them to JavaScript.
    if (SinkWaker* w = core->Detach()) w->Close();
    core.reset();
  }
  std::shared_ptr<SinkCore> core = std::make_shared<SinkCore>();
};

void FinalizeByteSink(napi_env, void* data, void*) {
  ReleaseAndForget(static_cast<ByteSinkResource*>(data));
}

ByteSinkResource* Unwrap(napi_env env, napi_value value, const char* op) {
  return UnwrapShared<ByteSinkResource>(env, value, kByteSinkTag, op, "a byte sink", "byte sink");
}

/** Open(onBytes) - a sink whose first byte after each Take calls @onBytes on this loop. */
napi_value Open(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  napi_valuetype type;
  napi_typeof(env, args[0], &type);
  if (type != napi_function) return ThrowTypeError(env, "byteSinkOpen expects a function");
  auto* s = new ByteSinkResource();
  auto* w = new SinkWaker(s->core);
  if (!w->Open(env, args[0], "vfio-bridge:byte-sink", 1000 * 1000)) {
    delete w;
    delete s;
    return ThrowVfioError(env, "byteSinkOpen", 0, "no event loop to wake", ErrorContext{},
                          "ENOLOOP");
  }
  // A sink never keeps the process alive: what writes to it (a vCPU thread) does.
  w->Ref(false);
  s->core->Attach(w);
  napi_value external;
  if (napi_create_external(env, s, FinalizeByteSink, nullptr, &external) != napi_ok) {
    s->Release();
    delete s;
    return nullptr;
  }
  ModuleData::Get(env)->Track(s);
  napi_type_tag_object(env, external, &kByteSinkTag);
  return external;
}

/** Take(sink) - the bytes appended since the last Take, as a Buffer; null when there are none. */
napi_value Take(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  ByteSinkResource* s = Unwrap(env, args[0], "byteSinkTake");
  if (s == nullptr) return nullptr;
  std::string bytes = s->core->Take();
  napi_value out;
  if (bytes.empty()) {
    napi_get_null(env, &out);
    return out;
  }
  void* data;
  napi_create_buffer_copy(env, bytes.size(), bytes.data(), &data, &out);
  return out;
}

/** Close(sink) - no more wake-ups, and no more bytes taken in; idempotent. */
napi_value Close(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  auto* s = static_cast<ByteSinkResource*>(TaggedExternal(env, args[0], kByteSinkTag));
  if (s == nullptr) return ThrowTypeError(env, "byteSinkClose expects a byte sink handle");
  s->Release();
  return nullptr;
}

}  // namespace

std::shared_ptr<SinkCore> GetByteSink(napi_env env, napi_value value, const char* op) {
  ByteSinkResource* s = Unwrap(env, value, op);
  return s == nullptr ? nullptr : s->core;
}

void RegisterByteSink(napi_env env, napi_value exports) {
  const napi_property_descriptor methods[] = {
      Method("byteSinkOpen", Open),
      Method("byteSinkTake", Take),
      Method("byteSinkClose", Close),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
