// The exit table: guest ranges a vCPU thread serves itself, without JavaScript.
//
// lib/vmm's memory listener publishes, for each address space (MMIO, port I/O), the flat ranges
// whose accesses are one fixed-width access on a mapping (trapped-mmap) or one pread/pwrite on a
// device fd (trapped-fd), and the registers a device model lets go for as long as its state
// allows: reads of a constant (a UART's line status while nothing changes it), and byte writes
// into a sink (a UART's transmitter). Each publication replaces that space's snapshot whole: a vCPU
// sees the old one or the new one, never a mix. Readers announce the snapshot they use in a hazard
// slot; Publish returns only once no reader still holds the old snapshot, so a range removed is
// never accessed after its commit returns. Snapshots pin what they point at (the mapping's pages, a
// dup of the fd), so closing a Mapping or a Device under a running vCPU cannot pull memory or an fd
// number out from under it.
#pragma once

#include <node_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "byte_sink.h"
#include "host_memory.h"

namespace vfio_bridge {

/** struct ExitEntry - one range of one space, [start, end). */
struct ExitEntry {
  uint64_t start;
  uint64_t end;
  enum Kind : uint8_t { kMmap, kFd, kConst, kSink } kind;
  bool readonly;
  uint8_t* base;         // kMmap: the host address of `start`
  int fd;                // kFd: the snapshot's own dup of the device fd
  uint64_t file_offset;  // kFd: the fd offset of `start`
  uint64_t value;        // kConst: what the range reads as (byte 0 at `start`)
  SinkCore* sink;        // kSink: where byte writes go (the snapshot holds it)
};

/** struct ExitSnapshot - one space's entries, sorted and disjoint, and what they pin. */
struct ExitSnapshot {
  ~ExitSnapshot();
  /** Find - the entry holding all of [addr, addr + size), or nullptr. */
  const ExitEntry* Find(uint64_t addr, uint32_t size) const;

  std::vector<ExitEntry> entries;
  std::vector<MapBacking*> pins;
  std::vector<int> fds;
  std::vector<std::shared_ptr<SinkCore>> sinks;
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
 * when JavaScript must: no entry holds it whole, an odd size, a write to a read-only or constant
 * range, an unaligned access to an fd range, or anything but a byte write to a sink.
 */
const ExitEntry* ServableEntry(const ExitSnapshot* s, uint64_t addr, uint32_t size, bool is_write);

/**
 * ServeAccess - serve one access of @size bytes at @addr from @s, @data being its bytes (the
 * value for a write, filled in for a read). False when JavaScript must serve it (as ServableEntry,
 * or a sink that refused the byte). Else true, with *fault set when a mapping's page was revoked
 * (a read then answers all-ones) and *err an errno when the fd access failed (likewise).
 */
bool ServeAccess(const ExitSnapshot* s, uint64_t addr, uint32_t size, bool is_write, uint8_t* data,
                 bool* fault, int* err);

/** GetExitTable - the table behind a handle from exitTableCreate (shared), or nullptr after
 * throwing. */
std::shared_ptr<ExitTableCore> GetExitTable(napi_env env, napi_value value, const char* op);

}  // namespace vfio_bridge
