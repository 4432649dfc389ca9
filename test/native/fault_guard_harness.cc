// Drives the SIGBUS guard's handler directly with a crafted siginfo and context, so a signal that
// arrives while the instruction pointer is at a guarded access can be tested deterministically.
// Prints one line per si_code: "<code> chained=<0|1> redirected=<0|1>".
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>

#include "fault_guard.h"

extern "C" const int32_t vfio_bridge_extable_start[];

namespace {

volatile sig_atomic_t g_chained = 0;

void Previous(int, siginfo_t*, void*) { g_chained = g_chained + 1; }

}  // namespace

int main() {
  struct sigaction previous;
  memset(&previous, 0, sizeof previous);
  previous.sa_sigaction = Previous;
  previous.sa_flags = SA_SIGINFO;
  sigemptyset(&previous.sa_mask);
  sigaction(SIGBUS, &previous, nullptr);
  vfio_bridge::InstallFaultGuard();
  struct sigaction guard;
  sigaction(SIGBUS, nullptr, &guard);

  // The first exception-table entry: a guarded load or store instruction.
  const int32_t* e = vfio_bridge_extable_start;
  auto insn = static_cast<greg_t>(reinterpret_cast<uintptr_t>(e) + static_cast<intptr_t>(e[0]));
  const int codes[] = {SI_USER, SI_QUEUE, SI_TKILL, BUS_ADRERR};
  for (int code : codes) {
    ucontext_t uc;
    memset(&uc, 0, sizeof uc);
    uc.uc_mcontext.gregs[REG_RIP] = insn;
    siginfo_t info;
    memset(&info, 0, sizeof info);
    info.si_signo = SIGBUS;
    info.si_code = code;
    sig_atomic_t before = g_chained;
    guard.sa_sigaction(SIGBUS, &info, &uc);
    printf("%d chained=%d redirected=%d\n", code, g_chained != before ? 1 : 0,
           uc.uc_mcontext.gregs[REG_RIP] != insn ? 1 : 0);
  }
  return 0;
}
