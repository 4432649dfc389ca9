// vCPUs: the vCPU fd, its mmap'd kvm_run page, registers, and KVM_RUN.
//
// Threading: a run is bounded. KVM_RUN blocks the calling thread for as long as the guest runs
// without exiting (an in-kernel halt included), so a one-shot per-vCPU timer, targeted at the
// creating thread, kicks the vCPU out with KVM_EXIT_INTR. The timer is armed once for a series of
// runs (ArmKick) or per run (Run with a budget): re-arming it on every exit would add two syscalls
// to each exit. The handler records the kick in a thread-local flag and sets kvm_run.immediate_exit
// of the running vCPU, so a kick that lands between two runs, or just before KVM_RUN is entered, is
// not lost: every later run returns at once until the timer is armed again. lib/kvm slices a long
// run into such bounded series and returns to the event loop between them.
//
// Exits are handed to JavaScript through the exit record (its layout in kvm_vcpu.h). A vCPU can
// also run on a thread of its own (vcpu_thread.cc); while it does, the ioctls here refuse it
// (EBUSY).
#include "kvm_vcpu.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "byte_sink.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"
#include "symbol_versions.h"

// KVM_SET_CPUID2 and KVM_SET_MSRS as the kernel numbers them: with C's 8-byte table header.
// C++ sizes the system headers' structs with flexible entry arrays differently (kvm_cpuid2 is 12
// bytes, kvm_msrs 16), so their macros would encode a size the kernel does not recognise.
#define VB_KVM_SET_CPUID2 _IOW(KVMIO, 0x90, __u64)
#define VB_KVM_SET_MSRS _IOW(KVMIO, 0x89, __u64)

namespace vfio_bridge {

void VcpuState::Release() {
  // The thread goes first: it may be inside KVM_RUN on this fd, or touching the kvm_run page.
  StopVcpuThread(this);
  if (timer_armed) timer_delete(timer);
  timer_armed = false;
  if (run != nullptr) munmap(run, run_size);
  run = nullptr;
  if (fd >= 0) close(fd);
  fd = -1;
  exit = nullptr;
}

namespace {

constexpr napi_type_tag kVcpuTag = {0x7666696f2d627269ULL, 0x6467652d76637075ULL};
constexpr size_t kExitSize = exit_record::kBytes;

// The vCPU running on this thread, for the kick handler. Initial-exec TLS is safe in a handler.
thread_local kvm_run* t_running __attribute__((tls_model("initial-exec"))) = nullptr;
// Set by a kick, cleared when a timer is armed.
thread_local volatile sig_atomic_t t_kicked __attribute__((tls_model("initial-exec"))) = 0;

void OnKick(int) {
  t_kicked = 1;
  kvm_run* run = t_running;
  if (run != nullptr) run->immediate_exit = 1;
}

bool InstallKickHandler() {
  static bool installed = false;
  if (installed) return true;
  struct sigaction sa = {};
  sa.sa_handler = OnKick;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: KVM_RUN must return EINTR when kicked.
  if (sigaction(KickSignal(), &sa, nullptr) != 0) return false;
  installed = true;
  return true;
}

void FinalizeVcpu(napi_env, void* data, void*) { ReleaseAndForget(static_cast<VcpuState*>(data)); }

napi_value ThrowVcpu(napi_env env, const char* op, VcpuState* v, int err,
                     const std::string& detail = std::string()) {
  return ThrowVfioError(env, op, err, detail, v->where);
}

/**
 * CreateVcpu(vm, id, mmapSize, exitBuffer) - KVM_CREATE_VCPU, mmap of its kvm_run page and the
 * kick timer; @exitBuffer (an ArrayBuffer of at least 48 bytes) receives each exit.
 */
napi_value CreateVcpu(napi_env env, napi_callback_info info) {
  Args<4> args(env, info);
  const char* op = "KVM_CREATE_VCPU";
  FdResource* vm = GetHandle(env, args[0], op);
  uint32_t id, mmap_size;
  if (vm == nullptr || !GetUint32(env, args[1], "vcpu id", &id) ||
      !GetUint32(env, args[2], "mmap size", &mmap_size)) {
    return nullptr;
  }
  bool is_ab = false;
  napi_is_arraybuffer(env, args[3], &is_ab);
  void* exit_data = nullptr;
  size_t exit_len = 0;
  if (!is_ab) return ThrowTypeError(env, "exit buffer must be an ArrayBuffer");
  napi_get_arraybuffer_info(env, args[3], &exit_data, &exit_len);
  if (exit_len < kExitSize) return ThrowRangeError(env, "exit buffer must hold 48 bytes");
  if (mmap_size < sizeof(kvm_run)) {
    return ThrowRangeError(env, "vCPU mmap size " + std::to_string(mmap_size) + " is too small");
  }
  if (!InstallKickHandler()) {
    int err = errno;
    return ThrowVfioError(env, "sigaction", err, "vCPU kick signal", vm->where);
  }
  int fd = IoctlValue(vm->fd, KVM_CREATE_VCPU, id);
  if (fd < 0) return ThrowErrno(env, op, vm, -fd, "vcpu " + std::to_string(id));
  void* run = mmap(nullptr, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (run == MAP_FAILED) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, "mmap", vm, err, "kvm_run of vcpu " + std::to_string(id));
  }
  sigevent sev = {};
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = KickSignal();
  sev._sigev_un._tid = static_cast<pid_t>(syscall(SYS_gettid));
  timer_t timer;
  if (timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0) {
    int err = errno;
    munmap(run, mmap_size);
    close(fd);
    return ThrowErrno(env, "timer_create", vm, err, "kick timer of vcpu " + std::to_string(id));
  }
  auto* v = new VcpuState();
  v->fd = fd;
  v->run = static_cast<kvm_run*>(run);
  v->run_size = mmap_size;
  v->timer = timer;
  v->timer_armed = true;
  v->exit = static_cast<uint8_t*>(exit_data);
  v->where = ErrorContext{vm->where.path + " vcpu " + std::to_string(id), ""};
  napi_value external;
  if (napi_create_external(env, v, FinalizeVcpu, nullptr, &external) != napi_ok) {
    v->Release();
    delete v;
    return nullptr;
  }
  ModuleData::Get(env)->Track(v);
  napi_type_tag_object(env, external, &kVcpuTag);
  return external;
}

/** CloseVcpu(vcpu) - unmap kvm_run, close the fd, delete the timer; idempotent. */
napi_value CloseVcpu(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  napi_valuetype type;
  bool tagged = false;
  if (napi_typeof(env, args[0], &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, args[0], &kVcpuTag, &tagged) != napi_ok || !tagged) {
    return ThrowTypeError(env, "closeVcpu expects a vCPU handle");
  }
  void* data = nullptr;
  napi_get_value_external(env, args[0], &data);
  static_cast<VcpuState*>(data)->Release();
  return nullptr;
}

/** RegsIoctl - get into or set from a Buffer of exactly sizeof(T). */
template <typename T>
napi_value RegsIoctl(napi_env env, napi_callback_info info, unsigned long request, const char* op,
                     bool set) {
  Args<2> args(env, info);
  VcpuState* v = GetStateVcpu(env, args[0], op);
  if (v == nullptr) return nullptr;
  T regs = {};
  if (set) {
    void* data;
    size_t len;
    bool is_buffer = false;
    napi_is_buffer(env, args[1], &is_buffer);
    if (!is_buffer) return ThrowTypeError(env, std::string(op) + " expects a Buffer");
    napi_get_buffer_info(env, args[1], &data, &len);
    if (len != sizeof(T)) {
      return ThrowRangeError(env, std::string(op) + ": buffer of " + std::to_string(len) +
                                      " bytes, expected " + std::to_string(sizeof(T)));
    }
    std::memcpy(&regs, data, sizeof(T));
  }
  int r = Ioctl(v->fd, request, &regs);
  if (r < 0) return ThrowVcpu(env, op, v, -r);
  if (set) return nullptr;
  napi_value out;
  void* copy;
  napi_create_buffer_copy(env, sizeof(T), &regs, &copy, &out);
  return out;
}

napi_value GetRegs(napi_env e, napi_callback_info i) {
  return RegsIoctl<kvm_regs>(e, i, KVM_GET_REGS, "KVM_GET_REGS", false);
}
napi_value SetRegs(napi_env e, napi_callback_info i) {
  return RegsIoctl<kvm_regs>(e, i, KVM_SET_REGS, "KVM_SET_REGS", true);
}
napi_value GetSregs(napi_env e, napi_callback_info i) {
  return RegsIoctl<kvm_sregs>(e, i, KVM_GET_SREGS, "KVM_GET_SREGS", false);
}
napi_value SetSregs(napi_env e, napi_callback_info i) {
  return RegsIoctl<kvm_sregs>(e, i, KVM_SET_SREGS, "KVM_SET_SREGS", true);
}

napi_value GetLapic(napi_env e, napi_callback_info i) {
  return RegsIoctl<kvm_lapic_state>(e, i, KVM_GET_LAPIC, "KVM_GET_LAPIC", false);
}
napi_value SetLapic(napi_env e, napi_callback_info i) {
  return RegsIoctl<kvm_lapic_state>(e, i, KVM_SET_LAPIC, "KVM_SET_LAPIC", true);
}
napi_value SetFpu(napi_env e, napi_callback_info i) {
  return RegsIoctl<kvm_fpu>(e, i, KVM_SET_FPU, "KVM_SET_FPU", true);
}

/** GetTscKhz(vcpu) - KVM_GET_TSC_KHZ: the guest's TSC rate in kHz. */
napi_value GetTscKhz(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  const char* op = "KVM_GET_TSC_KHZ";
  VcpuState* v = GetStateVcpu(env, args[0], op);
  if (v == nullptr) return nullptr;
  int r = IoctlValue(v->fd, KVM_GET_TSC_KHZ, 0);
  if (r < 0) return ThrowVcpu(env, op, v, -r);
  napi_value out;
  napi_create_uint32(env, static_cast<uint32_t>(r), &out);
  return out;
}

/** SetTscKhz(vcpu, khz) - KVM_SET_TSC_KHZ: the rate the guest's TSC runs at. */
napi_value SetTscKhz(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  const char* op = "KVM_SET_TSC_KHZ";
  VcpuState* v = GetStateVcpu(env, args[0], op);
  uint32_t khz = 0;
  if (v == nullptr || !GetUint32(env, args[1], "khz", &khz)) return nullptr;
  int r = IoctlValue(v->fd, KVM_SET_TSC_KHZ, khz);
  if (r < 0) return ThrowVcpu(env, op, v, -r);
  return nullptr;
}

/**
 * TableIoctl - a vCPU ioctl whose argument is a counted table built in TypeScript (kvm_cpuid2,
 * kvm_msrs: a u32 count, padding, then entries of @entry bytes); the Buffer's length must match
 * the count. Returns the ioctl's result (KVM_SET_MSRS: how many MSRs were set).
 */
napi_value TableIoctl(napi_env env, napi_callback_info info, unsigned long request, const char* op,
                      size_t entry) {
  Args<2> args(env, info);
  VcpuState* v = GetStateVcpu(env, args[0], op);
  if (v == nullptr) return nullptr;
  bool is_buffer = false;
  napi_is_buffer(env, args[1], &is_buffer);
  if (!is_buffer) return ThrowTypeError(env, std::string(op) + " expects a Buffer");
  void* data;
  size_t len;
  napi_get_buffer_info(env, args[1], &data, &len);
  uint32_t count = 0;
  if (len >= 8) std::memcpy(&count, data, 4);
  if (len < 8 || len != 8 + count * entry) {
    return ThrowRangeError(env, std::string(op) + ": buffer of " + std::to_string(len) +
                                    " bytes does not hold its " + std::to_string(count) +
                                    " entries");
  }
  // The kernel wants the table 8-byte aligned; a Buffer from the pool may not be.
  std::vector<uint64_t> storage((len + 7) / 8, 0);
  std::memcpy(storage.data(), data, len);
  int r = Ioctl(v->fd, request, storage.data());
  if (r < 0) return ThrowVcpu(env, op, v, -r);
  napi_value out;
  napi_create_int32(env, r, &out);
  return out;
}

napi_value SetCpuid2(napi_env e, napi_callback_info i) {
  return TableIoctl(e, i, VB_KVM_SET_CPUID2, "KVM_SET_CPUID2", sizeof(kvm_cpuid_entry2));
}
napi_value SetMsrs(napi_env e, napi_callback_info i) {
  return TableIoctl(e, i, VB_KVM_SET_MSRS, "KVM_SET_MSRS", sizeof(kvm_msr_entry));
}

}  // namespace

namespace {
void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void Put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
}  // namespace

/** CompletePending - hand JavaScript's answer to the last read exit back to kvm_run. */
void CompletePending(VcpuState* v) {
  kvm_run* run = v->run;
  if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write && run->mmio.len <= 8) {
    std::memcpy(run->mmio.data, v->exit + exit_record::kData, run->mmio.len);
  } else if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN &&
             run->io.count == 1 && run->io.size <= 8 &&
             run->io.data_offset + run->io.size <= v->run_size) {
    // SAFETY: the kernel's data_offset lies inside the kvm_run mapping; checked above.
    std::memcpy(reinterpret_cast<uint8_t*>(run) + run->io.data_offset, v->exit + exit_record::kData,
                run->io.size);
  }
  // Each answer is used once: a later exit of the same kind must not see it again.
  run->exit_reason = KVM_EXIT_UNKNOWN;
}

/** PublishExit - copy the exit's fields into the exit buffer (layout at the top of the file). */
void PublishExit(VcpuState* v) {
  kvm_run* run = v->run;
  uint8_t* e = v->exit;
  std::memset(e, 0, kExitSize);
  Put32(e + exit_record::kReason, run->exit_reason);
  switch (run->exit_reason) {
    case KVM_EXIT_MMIO:
      Put32(e + exit_record::kSize, run->mmio.len);
      Put64(e + exit_record::kAddress, run->mmio.phys_addr);
      if (run->mmio.is_write) std::memcpy(e + exit_record::kData, run->mmio.data, 8);
      e[exit_record::kIsWrite] = run->mmio.is_write;
      break;
    case KVM_EXIT_IO:
      Put32(e + exit_record::kSize, run->io.size);
      Put64(e + exit_record::kAddress, run->io.port);
      Put32(e + exit_record::kCount, run->io.count);
      e[exit_record::kIsWrite] = run->io.direction == KVM_EXIT_IO_OUT;
      if (run->io.direction == KVM_EXIT_IO_OUT && run->io.size <= 8 &&
          run->io.data_offset + run->io.size <= v->run_size) {
        std::memcpy(e + exit_record::kData, reinterpret_cast<uint8_t*>(run) + run->io.data_offset,
                    run->io.size);
      }
      break;
    case KVM_EXIT_FAIL_ENTRY:
      Put64(e + exit_record::kDetail, run->fail_entry.hardware_entry_failure_reason);
      break;
    case KVM_EXIT_INTERNAL_ERROR:
      Put64(e + exit_record::kDetail, run->internal.suberror);
      break;
    case KVM_EXIT_SYSTEM_EVENT:
      Put64(e + exit_record::kDetail, run->system_event.type);
      break;
    default:
      break;
  }
}

namespace {

/** Arm - arm the kick timer @ns from now (0 disarms) and forget any earlier kick. */
void Arm(VcpuState* v, uint64_t ns) {
  itimerspec its = {};
  its.it_value.tv_sec = static_cast<time_t>(ns / 1000000000ULL);
  its.it_value.tv_nsec = static_cast<long>(ns % 1000000000ULL);
  if (ns > 0) t_kicked = 0;
  timer_settime(v->timer, 0, &its, nullptr);
}

/**
 * RunOnce - one KVM_RUN; with @budget_ns > 0 the timer is armed for this run alone, with 0 the run
 * is bounded by whatever ArmKick armed (or not at all). Returns 0 or -errno.
 */
int RunOnce(VcpuState* v, uint64_t budget_ns) {
  CompletePending(v);
  if (budget_ns > 0) Arm(v, budget_ns);
  t_running = v->run;
  if (t_kicked) v->run->immediate_exit = 1;
  int r = ioctl(v->fd, KVM_RUN, 0);
  int err = r < 0 ? errno : 0;
  if (budget_ns > 0) Arm(v, 0);
  t_running = nullptr;
  v->run->immediate_exit = 0;
  if (err == EINTR || err == EAGAIN) {
    // A kick (our timer) or another signal: report it as an interrupted run.
    v->run->exit_reason = KVM_EXIT_INTR;
    return 0;
  }
  return -err;
}

/** ArmKick(vcpu, ns) - arm the kick timer for the runs that follow (0 disarms). */
napi_value ArmKick(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  VcpuState* v = GetIdleVcpu(env, args[0], "KVM_RUN");
  uint64_t ns;
  if (v == nullptr || !GetSafeInteger(env, args[1], "budget", &ns)) return nullptr;
  Arm(v, ns);
  return nullptr;
}

/** Run(vcpu, budgetNs) - one bounded KVM_RUN; returns the exit reason (details in the buffer). */
napi_value Run(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  VcpuState* v = GetIdleVcpu(env, args[0], "KVM_RUN");
  uint64_t budget;
  if (v == nullptr || !GetSafeInteger(env, args[1], "budget", &budget)) return nullptr;
  int r = RunOnce(v, budget);
  if (r < 0) return ThrowVcpu(env, "KVM_RUN", v, -r);
  PublishExit(v);
  v->exit[exit_record::kKicked] = t_kicked ? 1 : 0;
  napi_value out;
  napi_create_uint32(env, v->run->exit_reason, &out);
  return out;
}

/**
 * RunNative(vcpu, value, budgetNs) - the thinnest handler, for the benchmark's baseline: KVM_RUN
 * in a loop answering every MMIO read with @value and dropping MMIO writes, until any other exit.
 * Returns the number of MMIO exits served; the final exit is published as by run().
 */
napi_value RunNative(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  VcpuState* v = GetIdleVcpu(env, args[0], "KVM_RUN");
  uint32_t value;
  uint64_t budget;
  if (v == nullptr || !GetUint32(env, args[1], "value", &value) ||
      !GetSafeInteger(env, args[2], "budget", &budget)) {
    return nullptr;
  }
  uint64_t served = 0;
  Put64(v->exit + exit_record::kData, value);
  if (budget > 0) Arm(v, budget);
  for (;;) {
    int r = RunOnce(v, 0);
    if (r < 0) {
      Arm(v, 0);
      return ThrowVcpu(env, "KVM_RUN", v, -r);
    }
    if (v->run->exit_reason != KVM_EXIT_MMIO) break;
    served++;
    Put64(v->exit + exit_record::kData, value);
  }
  if (budget > 0) Arm(v, 0);
  PublishExit(v);
  napi_value out;
  napi_create_double(env, static_cast<double>(served), &out);
  return out;
}

}  // namespace

int KickSignal() { return SIGRTMIN + 6; }

void SetRunningVcpu(kvm_run* run) { t_running = run; }

VcpuState* GetVcpu(napi_env env, napi_value value, const char* op) {
  napi_valuetype type;
  bool tagged = false;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, value, &kVcpuTag, &tagged) != napi_ok || !tagged) {
    ThrowTypeError(env, std::string(op) + " expects a vCPU handle");
    return nullptr;
  }
  void* data = nullptr;
  napi_get_value_external(env, value, &data);
  auto* v = static_cast<VcpuState*>(data);
  if (v->fd < 0) {
    ThrowVfioError(env, op, 0, "the vCPU is closed", v->where, "ECLOSED");
    return nullptr;
  }
  return v;
}

VcpuState* GetStateVcpu(napi_env env, napi_value value, const char* op) {
  VcpuState* v = GetVcpu(env, value, op);
  if (v != nullptr && v->thread != nullptr && !VcpuThreadParked(v->thread)) {
    ThrowVfioError(env, op, EBUSY, "the vCPU's thread is running it (pause it first)", v->where);
    return nullptr;
  }
  return v;
}

VcpuState* GetIdleVcpu(napi_env env, napi_value value, const char* op) {
  VcpuState* v = GetVcpu(env, value, op);
  if (v != nullptr && v->thread != nullptr) {
    ThrowVfioError(env, op, EBUSY, "the vCPU's thread is running it", v->where);
    return nullptr;
  }
  return v;
}

void RegisterVcpu(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("kvmCreateVcpu", CreateVcpu), Method("kvmCloseVcpu", CloseVcpu),
      Method("kvmGetRegs", GetRegs),       Method("kvmSetRegs", SetRegs),
      Method("kvmGetSregs", GetSregs),     Method("kvmSetSregs", SetSregs),
      Method("kvmGetLapic", GetLapic),     Method("kvmSetLapic", SetLapic),
      Method("kvmSetFpu", SetFpu),         Method("kvmGetTscKhz", GetTscKhz),
      Method("kvmSetTscKhz", SetTscKhz),   Method("kvmSetCpuid2", SetCpuid2),
      Method("kvmSetMsrs", SetMsrs),       Method("kvmRun", Run),
      Method("kvmRunNative", RunNative),   Method("kvmArmKick", ArmKick),
  };
  DefineMethods(env, exports, methods);
  // Plain objects of named numbers: what lib/kvm lays its structs and reads the exit record by.
  auto numbers = [&](const char* exported,
                     std::initializer_list<std::pair<const char*, size_t>> list) {
    napi_value object;
    napi_create_object(env, &object);
    for (const auto& [name, n] : list) {
      napi_value v;
      napi_create_uint32(env, static_cast<uint32_t>(n), &v);
      napi_set_named_property(env, object, name, v);
    }
    napi_set_named_property(env, exports, exported, object);
  };
  numbers("kvmStructSizes", {{"regs", sizeof(kvm_regs)},
                             {"sregs", sizeof(kvm_sregs)},
                             {"routingEntry", sizeof(kvm_irq_routing_entry)},
                             {"lapic", sizeof(kvm_lapic_state)},
                             {"fpu", sizeof(kvm_fpu)},
                             {"cpuidEntry", sizeof(kvm_cpuid_entry2)},
                             {"msrEntry", sizeof(kvm_msr_entry)}});
  numbers("kvmExitLayout", {{"reason", exit_record::kReason},
                            {"size", exit_record::kSize},
                            {"address", exit_record::kAddress},
                            {"data", exit_record::kData},
                            {"count", exit_record::kCount},
                            {"isWrite", exit_record::kIsWrite},
                            {"kicked", exit_record::kKicked},
                            {"detail", exit_record::kDetail},
                            {"bytes", exit_record::kBytes}});
  RegisterVcpuThread(env, exports);
  RegisterExitTable(env, exports);
  RegisterByteSink(env, exports);
}

}  // namespace vfio_bridge
