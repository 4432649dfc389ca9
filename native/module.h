// Per-environment module state. Every Node environment (the main thread and each worker) that
// loads vfio-bridge gets its own ModuleData through napi_set_instance_data; nothing but the
// process-wide SIGBUS handler is global.
#pragma once

#include <napi.h>

#include <cstdint>
#include <vector>

namespace vfio_bridge {

class ModuleData;
class MappingState;

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
 * struct HotScratch - how the single mapping accessors receive their operands. JavaScript writes
 * the mapping's slot and the offset (and the value, for stores) here, calls an accessor with no
 * arguments, and reads the loaded value back: one N-API call, no argument conversion, no unwrap.
 */
struct alignas(8) HotScratch {
  uint32_t slot;
  uint32_t reserved;
  uint64_t offset;
  uint64_t value;
};

/**
 * ModuleData - the state of one environment: the error factory registered by lib/vfio, the list
 * of live resources, and the mapping slot table used by the single accessors.
 */
class ModuleData {
 public:
  ~ModuleData();

  /** Get - the ModuleData of @env (never null after module init). */
  static ModuleData* Get(napi_env env);

  void Track(Resource* r);
  void Untrack(Resource* r);

  Napi::FunctionReference error_factory;

  /**
   * The accessors' operands: @own_scratch (exported as `mappingScratch`) until JavaScript hands
   * its own buffer to `useMappingScratch`, which lets it make its views before the addon loads.
   */
  HotScratch* scratch = &own_scratch;
  HotScratch own_scratch = {};
  /** Keeps the buffer behind @scratch alive while it is not @own_scratch. */
  napi_ref scratch_ref = nullptr;
  /** Slot -> mapping; a slot is reused only after its mapping's JavaScript handle is collected. */
  std::vector<MappingState*> mappings;
  std::vector<uint32_t> free_slots;

 private:
  Resource* head_ = nullptr;
};

/** ForgetModuleCache - drop the calling thread's cached pointer to @module (mapping.cc). */
void ForgetModuleCache(ModuleData* module);

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
void RegisterKvm(Napi::Env env, Napi::Object exports);
void RegisterVcpu(Napi::Env env, Napi::Object exports);
void RegisterIrq(Napi::Env env, Napi::Object exports);
void RegisterHotReset(Napi::Env env, Napi::Object exports);
void RegisterIommufd(Napi::Env env, Napi::Object exports);
void RegisterIoasDma(Napi::Env env, Napi::Object exports);
void RegisterDeviceCdev(Napi::Env env, Napi::Object exports);
// Device migration (native/migration.cc, native/migration_data.cc).
void RegisterMigration(Napi::Env env, Napi::Object exports);
void RegisterMigrationData(Napi::Env env, Napi::Object exports);

}  // namespace vfio_bridge
