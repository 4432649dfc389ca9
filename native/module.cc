// Module initialisation: per-environment state, the fault guard and the registration of each
// concept's functions.
#include "module.h"

#include "fault_guard.h"
#include "host_memory.h"

namespace vfio_bridge {

ModuleData::~ModuleData() {
  ForgetModuleCache(this);
  mappings.clear();
  free_slots.clear();
  // Environment teardown: free everything JavaScript left open. Objects that are finalized later
  // find module == nullptr and only free their bookkeeping.
  while (head_ != nullptr) {
    Resource* r = head_;
    head_ = r->next;
    r->Release();
    r->module = nullptr;
    r->prev = r->next = nullptr;
  }
}

ModuleData* ModuleData::Get(napi_env env) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  return static_cast<ModuleData*>(data);
}

void ModuleData::Track(Resource* r) {
  r->module = this;
  r->prev = nullptr;
  r->next = head_;
  if (head_ != nullptr) head_->prev = r;
  head_ = r;
}

void ModuleData::Untrack(Resource* r) {
  if (r->prev != nullptr) r->prev->next = r->next;
  if (r->next != nullptr) r->next->prev = r->prev;
  if (head_ == r) head_ = r->next;
  r->prev = r->next = nullptr;
  r->module = nullptr;
}

void ReleaseAndForget(Resource* r) {
  r->Release();
  if (r->module != nullptr) r->module->Untrack(r);
  delete r;
}

/** Noop - the cheapest possible N-API call; the benchmark's baseline. */
static napi_value Noop(napi_env, napi_callback_info) { return nullptr; }

/** ReassertFaultGuard - JavaScript's way to take the SIGBUS handler back after libuv replaced it.
 */
static napi_value ReassertFaultGuard(napi_env, napi_callback_info) {
  AssertFaultGuard();
  return nullptr;
}

/** Init - per-environment module initialisation. */
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallFaultGuard();
  env.SetInstanceData(new ModuleData());

  napi_value noop;
  napi_create_function(env, "noop", NAPI_AUTO_LENGTH, Noop, nullptr, &noop);
  exports.Set("noop", noop);
  napi_value reassert;
  napi_create_function(env, "assertFaultGuard", NAPI_AUTO_LENGTH, ReassertFaultGuard, nullptr,
                       &reassert);
  exports.Set("assertFaultGuard", reassert);
  RegisterErrors(env, exports);
  RegisterHandles(env, exports);
  RegisterMapping(env, exports);
  RegisterContainer(env, exports);
  RegisterGroup(env, exports);
  RegisterDevice(env, exports);
  RegisterKvm(env, exports);
  RegisterVcpu(env, exports);
  RegisterGuestMemory(env, exports);
  RegisterDma(env, exports);
  RegisterIrq(env, exports);
  RegisterHotReset(env, exports);
  RegisterIommufd(env, exports);
  RegisterIoasDma(env, exports);
  RegisterDeviceCdev(env, exports);
  // Device migration (native/migration.cc, native/migration_data.cc).
  RegisterMigration(env, exports);
  RegisterMigrationData(env, exports);
  return exports;
}

}  // namespace vfio_bridge

static Napi::Object InitVfioBridge(Napi::Env env, Napi::Object exports) {
  return vfio_bridge::Init(env, exports);
}

NODE_API_MODULE(vfio_bridge, InitVfioBridge)
