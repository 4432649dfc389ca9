// The VM handle: a VM's fd plus what lives as long as it (the pins behind its memory slots). The
// VM ioctls are in kvm.cc, its memory slots in kvm_slots.cc.
#pragma once

#include <node_api.h>

#include <vector>

#include "handle.h"
#include "host_memory.h"

namespace vfio_bridge {

/**
 * class VmResource - a VM's fd and a pin on the memory behind each of its slots, by slot number:
 * the pages stay mapped while KVM may translate to them, whoever closes the memory meanwhile. The
 * pins go when the slot is deleted or the VM's fd is given up.
 */
class VmResource : public FdResource {
 public:
  static constexpr int kKind = 1;
  ~VmResource() override { Closed(); }
  void Closed() override {
    for (MapBacking*& p : pins) {
      if (p != nullptr) MapUnpin(p);
      p = nullptr;
    }
    pins.clear();
  }
  int Kind() const override { return kKind; }

  /** SetPin - @pin now backs @slot (nullptr: the slot was deleted); the slot's old pin goes. */
  void SetPin(uint32_t slot, MapBacking* pin) {
    if (pins.size() <= slot) pins.resize(slot + 1, nullptr);
    if (pins[slot] != nullptr) MapUnpin(pins[slot]);
    pins[slot] = pin;
  }

  std::vector<MapBacking*> pins;
};

/** GetVm - the open VM behind @value, or nullptr after throwing (as GetHandle). */
VmResource* GetVm(napi_env env, napi_value value, const char* op);

/** RegisterKvmSlots - add the memory slot functions to @exports. */
void RegisterKvmSlots(napi_env env, napi_value exports);

}  // namespace vfio_bridge
