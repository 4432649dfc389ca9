// Binds the glibc and libstdc++ symbols the addon calls to versions that glibc 2.28 and GCC 8's
// libstdc++ (GLIBCXX_3.4.25) already have, so a prebuild made on a newer system loads wherever
// Node 20's official binaries run: glibc 2.28 is their floor, and the distributions at that floor
// (Debian 10, RHEL 8) ship GCC 8's libstdc++.
//
// glibc 2.32-2.34 moved the pthread and timer functions from libpthread and librt into libc under
// new symbol versions; the old versions still name the same code there (pthread_kill's differs only
// in returning ESRCH for a thread that has exited, which the kick ignores), and live in
// libpthread/librt on older systems (binding.gyp links both). Include this in every file that calls
// one of them; test/native/symbol-versions.test.ts fails if the addon needs anything newer.
#ifndef VFIO_BRIDGE_SYMBOL_VERSIONS_H_
#define VFIO_BRIDGE_SYMBOL_VERSIONS_H_

#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__GLIBC__)
__asm__(".symver pthread_create,pthread_create@GLIBC_2.2.5");
__asm__(".symver pthread_join,pthread_join@GLIBC_2.2.5");
__asm__(".symver pthread_kill,pthread_kill@GLIBC_2.2.5");
__asm__(".symver pthread_sigmask,pthread_sigmask@GLIBC_2.2.5");
__asm__(".symver pthread_setname_np,pthread_setname_np@GLIBC_2.12");
// GLIBC_2.3.3, not 2.2.5: the 2.2.5 timer functions are the old ABI with a different timer_t.
__asm__(".symver timer_create,timer_create@GLIBC_2.3.3");
__asm__(".symver timer_settime,timer_settime@GLIBC_2.3.3");
__asm__(".symver timer_delete,timer_delete@GLIBC_2.3.3");
// GCC 12 re-exported std::condition_variable::wait at GLIBCXX_3.4.30 so that thread cancellation
// can unwind through it; the 3.4.11 one waits the same way, and the addon never cancels a thread.
__asm__(
    ".symver _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE,"
    "_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");
#endif

namespace vfio_bridge {

/**
 * FstatFd: fstat(2) without glibc's fstat64 symbol, which exists only since 2.33 (before, fstat
 * was an inline over __fxstat64). On x86-64 the kernel's struct stat is glibc's struct stat.
 */
inline int FstatFd(int fd, struct stat* st) { return static_cast<int>(syscall(SYS_fstat, fd, st)); }

}  // namespace vfio_bridge

#endif  // VFIO_BRIDGE_SYMBOL_VERSIONS_H_
