// LD_PRELOAD shim for the errno tests: every C++ allocation overwrites errno with EDOM, as an
// allocator is allowed to. An error path that reads errno after building its message or context
// then reports EDOM instead of the syscall's errno.
#include <errno.h>
#include <stdlib.h>

#include <new>

void* operator new(size_t n) {
  void* p = malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  errno = EDOM;
  return p;
}
