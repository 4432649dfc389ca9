// SIGBUS recovery by exception table, the way kernels recover from faults in user-copy routines.
//
// vfio-pci (Linux 5.8+) zaps BAR mappings while memory decode is off or the device is resetting;
// touching one then raises SIGBUS. Only the instructions listed in the accessors' exception table
// are recovered. The per-access cost is zero: no syscall, no sigsetjmp, no signal-mask save.
#include "fault_guard.h"

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <atomic>
#include <mutex>

#include "symbol_versions.h"

#if !defined(__x86_64__) || !defined(__linux__)
#error "vfio-bridge's fault guard supports only x86-64 Linux"
#endif

extern "C" {
// Entries are pairs of 32-bit offsets relative to the field itself (see accessors_x86_64.S).
__attribute__((visibility("protected"))) extern const int32_t vfio_bridge_extable_start[];
__attribute__((visibility("protected"))) extern const int32_t vfio_bridge_extable_end[];
}

namespace vfio_bridge {
namespace {

// The handler that was installed before ours, to chain to. Published as an immutable heap copy
// through an atomic pointer, so the signal handler never reads a half-written struct sigaction;
// nullptr means the default action. Superseded copies are leaked on purpose: a handler running on
// another thread may still be reading one.
std::atomic<const struct sigaction*> g_chained{nullptr};
// Serialises re-assertion (mapping creation on several threads); never taken in the handler.
std::mutex g_install_mutex;

uintptr_t FindFixup(uintptr_t ip) {
  for (const int32_t* e = vfio_bridge_extable_start; e < vfio_bridge_extable_end; e += 2) {
    uintptr_t insn = reinterpret_cast<uintptr_t>(&e[0]) + static_cast<intptr_t>(e[0]);
    if (insn == ip) return reinterpret_cast<uintptr_t>(&e[1]) + static_cast<intptr_t>(e[1]);
  }
  return 0;
}

void Chain(int sig, siginfo_t* info, void* context) {
  const struct sigaction* previous = g_chained.load(std::memory_order_acquire);
  // sa_handler and sa_sigaction share storage, so SIG_DFL/SIG_IGN are recognised either way.
  bool is_default = previous == nullptr || previous->sa_handler == SIG_DFL;
  bool is_ignored = !is_default && previous->sa_handler == SIG_IGN;
  if (!is_default && !is_ignored) {
    if (previous->sa_flags & SA_SIGINFO) {
      previous->sa_sigaction(sig, info, context);
    } else {
      previous->sa_handler(sig);
    }
    return;
  }
  if (is_ignored && info->si_code <= 0) return;  // a sent signal, ignored
  // Default action: restore it and re-raise. The signal stays blocked until this handler
  // returns, then terminates the process as it would have without vfio-bridge.
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  raise(sig);
}

void OnSigbus(int sig, siginfo_t* info, void* context) {
  // si_code > 0 only when the kernel raised the signal for a fault; a sent SIGBUS (kill, sigqueue,
  // tgkill: si_code <= 0) can arrive while the instruction pointer happens to be at a guarded
  // access, and must still reach its listener instead of failing an access that did not fault.
  if (info != nullptr && info->si_code > 0) {
    auto* uc = static_cast<ucontext_t*>(context);
    uintptr_t fixup = FindFixup(static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]));
    if (fixup != 0) {
      uc->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(fixup);
      return;
    }
  }
  Chain(sig, info, context);
}

}  // namespace

void AssertFaultGuard() {
  std::lock_guard<std::mutex> lock(g_install_mutex);
  struct sigaction current;
  if (sigaction(SIGBUS, nullptr, &current) != 0) return;
  if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == OnSigbus) return;
  // Someone (libuv for process.on('SIGBUS'), another addon) replaced the guard, or this is the
  // first call: chain to whatever is there now. Publish it before installing the guard, so the
  // guard never chains to a stale handler.
  g_chained.store(new struct sigaction(current), std::memory_order_release);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
}

void InstallFaultGuard() {
  AssertFaultGuard();
  // A synchronous SIGBUS on a thread that blocks it kills the process regardless of handlers, so
  // every thread that loads the addon (main, workers) unblocks it once, at load time.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGBUS);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

}  // namespace vfio_bridge
