// libstdc++'s headers (GCC 11+) read glibc's __libc_single_threaded (GLIBC_2.32) to skip atomic
// reference counts in std::shared_ptr. A hidden definition of our own, always 0 ("threads may
// exist"), keeps the addon off that symbol: reference counts are always atomic, which is what the
// vCPU threads need anyway.
extern "C" {
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}
