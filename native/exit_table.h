// The exit table: guest ranges a vCPU thread serves itself, without JavaScript.
//
// lib/vmm's memory listener publishes, for each address space (MMIO, port I/O), the flat ranges
// whose accesses are one fixed-width access on a mapping (trapped-mmap) or one pread/pwrite on a
// device fd (trapped-fd). Each publication replaces that space's snapshot whole: a vCPU sees the
// old one or the new one, never a mix. Readers announce the snapshot they use in a hazard slot;
// Publish returns only once no reader still holds the old snapshot, so a range removed is never
// accessed after its commit returns. Snapshots pin what they point at (the mapping's pages, a dup
// of the fd), so closing a Mapping or a Device under a running vCPU cannot pull memory or an fd
// number out from under it.
#pragma once

#include <node_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "host_memory.h"

namespace vfio_bridge {

/** struct ExitEntry - one range of one space, [start, end). */
struct ExitEntry {
  uint64_t start;
  uint64_t end;
  enum Kind : uint8_t { kMmap, kFd } kind;
  bool readonly;
  uint8_t* base;         // kMmap: the host address of `start`
  int fd;                // kFd: the snapshot's own dup of the device fd
  uint64_t file_offset;  // kFd: the fd offset of `start`
};

/** struct ExitSnapshot - one space's entries, sorted and disjoint, and what they pin. */
struct ExitSnapshot {
  ~ExitSnapshot();
  /** Find - the entry holding all of [addr, addr + size), or nullptr. */
  const ExitEntry* Find(uint64_t addr, uint32_t size) const;

  std::vector<ExitEntry> entries;
  std::vector<MapBacking*> pins;
  std::vector<int> fds;
};

constexpr int kSpaceMmio = 0;
constexpr int kSpacePio = 1;

/** class ExitTableCore - the two spaces' current snapshots and the readers' hazard slots. */
class ExitTableCore {
 public:
  ~ExitTableCore();

  /** Acquire - the current snapshot of @space, announced in @hazard until Release. */
  const ExitSnapshot* Acquire(int space, std::atomic<const ExitSnapshot*>* hazard) const {
    const ExitSnapshot* s = current_[space].load();
    for (;;) {
      hazard->store(s);
      const ExitSnapshot* again = current_[space].load();
      if (again == s) return s;
      s = again;
    }
  }
  static void Release(std::atomic<const ExitSnapshot*>* hazard) { hazard->store(nullptr); }

  /** Publish - make @s the snapshot of @space, wait until no reader holds the old one, free it. */
  void Publish(int space, ExitSnapshot* s);

  void AddReader(std::atomic<const ExitSnapshot*>* hazard);
  void RemoveReader(std::atomic<const ExitSnapshot*>* hazard);

 private:
  std::atomic<const ExitSnapshot*> current_[2] = {nullptr, nullptr};
  std::mutex readers_mu_;
  std::vector<std::atomic<const ExitSnapshot*>*> readers_;
};

/**
 * ServableEntry - the entry a vCPU thread serves an access of @size bytes at @addr from, or nullptr
 * when JavaScript must: no entry holds it whole, an odd size, a write to a read-only range, or an
 * unaligned access to an fd range.
 */
const ExitEntry* ServableEntry(const ExitSnapshot* s, uint64_t addr, uint32_t size, bool is_write);

/** GetExitTable - the table behind a handle from exitTableCreate (shared), or nullptr after
 * throwing. */
std::shared_ptr<ExitTableCore> GetExitTable(napi_env env, napi_value value, const char* op);

}  // namespace vfio_bridge
