// One vCPU as the addon holds it: shared by the ioctl wrappers (kvm_vcpu.cc) and the vCPU thread
// that runs it (vcpu_thread.cc).
#pragma once

#include <linux/kvm.h>
#include <node_api.h>
#include <time.h>

#include <cstddef>
#include <cstdint>

#include "errors.h"
#include "module.h"

namespace vfio_bridge {

class VcpuThread;

/**
 * The exit record: what the addon tells JavaScript of one exit, in a small ArrayBuffer owned by
 * the vCPU's JavaScript object (never the kvm_run page, which close() unmaps while JavaScript may
 * still hold views). lib/kvm reads these offsets from `kvmExitLayout`, not from a copy of them.
 * For an MMIO read or port input, JavaScript writes the value at kData; the addon copies it into
 * kvm_run before the next KVM_RUN, as KVM expects on re-entry.
 */
namespace exit_record {
constexpr size_t kReason = 0;    // u32 kvm_run.exit_reason
constexpr size_t kSize = 4;      // u32 access size in bytes
constexpr size_t kAddress = 8;   // u64 guest-physical address or port
constexpr size_t kData = 16;     // 8 bytes: the value written, or the answer to a read
constexpr size_t kCount = 24;    // u32 port I/O repeat count
constexpr size_t kIsWrite = 28;  // u8
constexpr size_t kKicked = 29;   // u8: the run's time budget expired
constexpr size_t kDetail = 32;   // u64 hardware/suberror reason, system event type
constexpr size_t kBytes = 48;
}  // namespace exit_record

/** class VcpuState - one vCPU: its fd, its kvm_run page, its kick timer and its thread. */
class VcpuState : public Resource {
 public:
  void Release() override;

  int fd = -1;
  kvm_run* run = nullptr;
  size_t run_size = 0;
  timer_t timer = {};
  bool timer_armed = false;  // the timer exists (it is armed per run)
  // The exit ArrayBuffer's memory. lib/kvm keeps the ArrayBuffer in the same object as the handle,
  // so it lives as long as anything can reach run().
  uint8_t* exit = nullptr;
  // The thread running this vCPU, while one does (vcpu_thread.cc); nullptr otherwise.
  VcpuThread* thread = nullptr;
  // The last thread's counters once it was joined: mmio, pio, handoffs, faults, runs.
  uint64_t last_stats[5] = {0, 0, 0, 0, 0};
  ErrorContext where;
};

/** GetVcpu - the open vCPU behind @value, or nullptr after throwing. */
VcpuState* GetVcpu(napi_env env, napi_value value, const char* op);

/**
 * GetIdleVcpu - as GetVcpu, but also refuses (EBUSY) a vCPU whose thread is running the guest:
 * its ioctls would wait for the guest to exit, which an in-kernel halt may never do.
 */
VcpuState* GetIdleVcpu(napi_env env, napi_value value, const char* op);

/**
 * GetStateVcpu - as GetVcpu, but refuses (EBUSY) a vCPU whose thread is not parked: reading or
 * setting its registers would race with KVM_RUN, or wait for a guest that may never exit.
 */
VcpuState* GetStateVcpu(napi_env env, napi_value value, const char* op);

/** VcpuThreadParked - whether @t waits parked (its vCPU out of KVM_RUN until resumed). */
bool VcpuThreadParked(const VcpuThread* t);

/** KickSignal - the per-thread signal that takes a vCPU out of KVM_RUN. */
int KickSignal();

/** SetRunningVcpu - tell the kick handler which kvm_run this thread runs (nullptr: none). */
void SetRunningVcpu(kvm_run* run);

/** CompletePending - hand JavaScript's answer to the last read exit back to kvm_run. */
void CompletePending(VcpuState* v);

/** PublishExit - copy the exit's fields into the exit record. */
void PublishExit(VcpuState* v);

/** StopVcpuThread - stop and join @v's thread, if it has one (vcpu_thread.cc). */
void StopVcpuThread(VcpuState* v);

void RegisterVcpuThread(napi_env env, napi_value exports);
void RegisterExitTable(napi_env env, napi_value exports);

}  // namespace vfio_bridge
