// Per-environment module state. Every Node environment (the main thread and each worker) that
// loads vfio-bridge gets its own ModuleData through napi_set_instance_data; nothing but the
// process-wide SIGBUS handler is global.
#pragma once

#include <napi.h>

namespace vfio_bridge {

class ModuleData;

/**
 * Resource - an OS resource (fd, mapping) owned by one environment.
 *
 * Resources are linked into their ModuleData so that environment teardown (worker exit) releases
 * whatever JavaScript never closed, even if the owning objects are never finalized.
 */
class Resource {
 public:
  virtual ~Resource() = default;
  /** Release - free the OS resource; must be idempotent. */
  virtual void Release() = 0;

  ModuleData* module = nullptr;
  Resource* prev = nullptr;
  Resource* next = nullptr;
};

/**
 * ModuleData - the state of one environment: the error factory registered by lib/vfio and the list
 * of live resources.
 */
class ModuleData {
 public:
  ~ModuleData();

  /** Get - the ModuleData of @env (never null after module init). */
  static ModuleData* Get(napi_env env);

  void Track(Resource* r);
  void Untrack(Resource* r);

  Napi::FunctionReference error_factory;

 private:
  Resource* head_ = nullptr;
};

/**
 * ReleaseAndForget - release @r and unlink it from its environment, when its last JavaScript owner
 * goes away. Deletes @r.
 */
void ReleaseAndForget(Resource* r);

// Per-concept registration; each adds its functions to the exports object.
void RegisterErrors(Napi::Env env, Napi::Object exports);
void RegisterHandles(Napi::Env env, Napi::Object exports);
void RegisterMapping(Napi::Env env, Napi::Object exports);
void RegisterContainer(Napi::Env env, Napi::Object exports);
void RegisterGroup(Napi::Env env, Napi::Object exports);
void RegisterDevice(Napi::Env env, Napi::Object exports);

}  // namespace vfio_bridge
