// A VM's memory slots: KVM_SET_USER_MEMORY_REGION, one at a time on the calling thread, or a batch
// of them in order on the thread pool. Under nested virtualization one such ioctl can take
// milliseconds (KVM waits for every vCPU to leave the old memory map), so a VMM that changes its
// slots while the guest runs (a BAR moved, a decode bit toggled) queues them rather than holding
// its event loop. Which slots, where and why is lib/kvm's policy; the pins are kept here.
#include <linux/kvm.h>

#include <string>
#include <vector>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "kvm_vm.h"

namespace vfio_bridge {

VmResource* GetVm(napi_env env, napi_value value, const char* op) {
  FdResource* h = GetHandle(env, value, op);
  if (h == nullptr) return nullptr;
  if (h->Kind() != VmResource::kKind) {
    ThrowTypeError(env, std::string(op) + " expects a VM handle");
    return nullptr;
  }
  return static_cast<VmResource*>(h);
}

namespace {

const char* const kOp = "KVM_SET_USER_MEMORY_REGION";

/** struct SlotOp - one KVM_SET_USER_MEMORY_REGION and the pin of the memory it gives KVM. */
struct SlotOp {
  kvm_userspace_memory_region region = {};
  MapBacking* pin = nullptr;
  int err = 0;
  napi_ref refused = nullptr;  // in a batch: the error it was refused with before KVM saw it
};

/**
 * ReadSlotOp - @op from (slot, flags, gpa, size, memory, offset) at @argv; size 0 deletes the slot
 * (@memory is then ignored). The memory is pinned here. False after throwing.
 */
bool ReadSlotOp(napi_env env, napi_value* argv, SlotOp* op) {
  uint64_t gpa, size, offset;
  kvm_userspace_memory_region& region = op->region;
  if (!GetUint32(env, argv[0], "slot", &region.slot) ||
      !GetUint32(env, argv[1], "flags", &region.flags) ||
      !GetSafeInteger(env, argv[2], "guest address", &gpa) ||
      !GetSafeInteger(env, argv[3], "size", &size) ||
      !GetSafeInteger(env, argv[5], "offset", &offset)) {
    return false;
  }
  if (region.slot > 0xffff) {
    ThrowRangeError(env, std::string(kOp) + ": slot number too large");
    return false;
  }
  if (size > 0) {
    HostRange range;
    if (!MemoryPin(env, argv[4], &range, &op->pin)) {
      ThrowTypeError(env, std::string(kOp) + " expects a mapping or guest memory handle");
      return false;
    }
    const char* refusal = nullptr;
    int err = EINVAL;
    if (op->pin == nullptr || range.base == nullptr) {
      refusal = "the memory is closed";
      err = 0;
    } else if (offset > range.length || size > range.length - offset) {
      refusal = "the slot reaches past the end of the memory";
    } else if (!range.writable && (region.flags & KVM_MEM_READONLY) == 0) {
      refusal = "read-only memory needs a read-only slot";
      err = EACCES;
    }
    if (refusal != nullptr) {
      if (op->pin != nullptr) MapUnpin(op->pin);
      op->pin = nullptr;
      ThrowVfioError(env, kOp, err, refusal, *range.where, err == 0 ? "ECLOSED" : "");
      return false;
    }
    region.userspace_addr = reinterpret_cast<uint64_t>(range.base + offset);
  }
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  return true;
}

/** Done - record @op's outcome in @vm: KVM translates through its pin now, or it failed. */
void Done(VmResource* vm, SlotOp* op) {
  if (op->err == 0 && vm->fd >= 0) {
    // KVM now translates through the new memory (or none): the old pin, if any, can go.
    vm->SetPin(op->region.slot, op->pin);
  } else if (op->pin != nullptr) {
    MapUnpin(op->pin);
  }
  op->pin = nullptr;
}

/**
 * SetUserMemoryRegion(vm, slot, flags, gpa, size, memory, offset) - KVM_SET_USER_MEMORY_REGION
 * with @size bytes of @memory (a mapping or guest memory handle) from @offset; size 0 deletes the
 * slot (@memory is then null). The slot pins the memory's pages until it is deleted or the VM goes,
 * so closing the memory first never leaves KVM translating to an address that is no longer (or is
 * again, for something else) mapped. Alignment, overlap and bounds policy is lib/kvm's.
 */
napi_value SetUserMemoryRegion(napi_env env, napi_callback_info info) {
  Args<7> args(env, info);
  VmResource* vm = GetVm(env, args[0], kOp);
  SlotOp op;
  if (vm == nullptr || !ReadSlotOp(env, &args.argv[1], &op)) return nullptr;
  int r = Ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &op.region);
  op.err = r < 0 ? -r : 0;
  Done(vm, &op);
  if (r < 0) return ThrowErrno(env, kOp, vm, -r, "slot " + std::to_string(op.region.slot));
  return nullptr;
}

/**
 * class SlotBatchCall - KVM_SET_USER_MEMORY_REGION for each of a batch's slots, in order, on a
 * duplicate of the VM fd. Each op pins its memory from the moment it is queued; the pins pass to
 * the VM (or go) when the batch settles, on the main thread, which alone touches the VM's pins.
 */
class SlotBatchCall : public AsyncCall {
 public:
  SlotBatchCall(VmResource* vm) : AsyncCall(kOp, vm->where), vm_(vm) {}
  ~SlotBatchCall() override {
    for (SlotOp& op : ops) {
      if (op.pin != nullptr) MapUnpin(op.pin);
    }
  }

  /** Refuse @op with the pending exception: it is skipped, and its result is that error. */
  void Refuse(napi_env env, SlotOp* op) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    napi_create_reference(env, e, 1, &op->refused);
  }

  bool Prepare(napi_env env, napi_value vm) { return DupFd(env, vm_, &fd_) && Hold(env, vm); }

  void Run() override {
    for (SlotOp& op : ops) {
      if (op.refused != nullptr) continue;
      int r = Ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &op.region);
      op.err = r < 0 ? -r : 0;
    }
    fd_.Close();
  }

  /** An array with, for each op, undefined or the error KVM gave it (the VM closed: no pins kept).
   */
  napi_value Settle(napi_env env) override {
    napi_value out;
    napi_create_array_with_length(env, ops.size(), &out);
    for (size_t i = 0; i < ops.size(); i++) {
      SlotOp& op = ops[i];
      Done(vm_, &op);
      napi_value result = Undefined(env);
      if (op.refused != nullptr) {
        napi_get_reference_value(env, op.refused, &result);
        napi_delete_reference(env, op.refused);
        op.refused = nullptr;
      } else if (op.err != 0) {
        ThrowErrno(env, kOp, vm_, op.err, "slot " + std::to_string(op.region.slot));
        napi_get_and_clear_last_exception(env, &result);
      }
      napi_set_element(env, out, static_cast<uint32_t>(i), result);
    }
    return out;
  }

  std::vector<SlotOp> ops;

 private:
  VmResource* const vm_;  // alive: the call holds its handle
  OwnedFd fd_;
};

/**
 * SetUserMemoryRegionsAsync(vm, ops) - a promise: each of @ops, an array of (slot, flags, gpa,
 * size, memory, offset) as SetUserMemoryRegion takes them, given to KVM in order on the thread
 * pool; it resolves with one entry per op, undefined or the error it was refused with: by KVM, or
 * before (a memory closed since the op was planned: the op is skipped, the others still go).
 * Batches queued one after the other may run concurrently: the caller orders them (lib/kvm queues
 * one after the previous has settled).
 */
napi_value SetUserMemoryRegionsAsync(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  VmResource* vm = GetVm(env, args[0], kOp);
  if (vm == nullptr) return nullptr;
  bool is_array = false;
  napi_is_array(env, args[1], &is_array);
  if (!is_array) return ThrowTypeError(env, std::string(kOp) + ": the slot ops must be an array");
  uint32_t n = 0;
  napi_get_array_length(env, args[1], &n);
  std::vector<napi_value> entries(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_get_element(env, args[1], i, &entries[i]);
    bool ok = false;
    napi_is_array(env, entries[i], &ok);
    uint32_t len = 0;
    if (ok) napi_get_array_length(env, entries[i], &len);
    if (!ok || len != 6) {
      return ThrowTypeError(
          env, std::string(kOp) + ": each slot op is [slot, flags, gpa, size, memory, offset]");
    }
  }
  auto* call = new SlotBatchCall(vm);
  call->ops.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value argv[6];
    for (uint32_t k = 0; k < 6; k++) napi_get_element(env, entries[i], k, &argv[k]);
    if (!ReadSlotOp(env, argv, &call->ops[i])) call->Refuse(env, &call->ops[i]);
  }
  if (!call->Prepare(env, args[0])) {
    for (SlotOp& op : call->ops) {
      if (op.refused != nullptr) napi_delete_reference(env, op.refused);
      op.refused = nullptr;
    }
    return Abandon(env, call);
  }
  return Queue(env, call);
}

}  // namespace

void RegisterKvmSlots(napi_env env, napi_value exports) {
  const napi_property_descriptor methods[] = {
      Method("kvmSetUserMemoryRegion", SetUserMemoryRegion),
      Method("kvmSetUserMemoryRegionsAsync", SetUserMemoryRegionsAsync),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
