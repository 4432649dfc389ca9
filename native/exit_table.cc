// Exit tables (see exit_table.h): creation, publication from lib/vmm's listener, the serving of one
// access (the vCPU threads' and the tests'), and a lookup that lets the tests hold the native
// routing against the TypeScript flat view.
#include "exit_table.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "accessors.h"
#include "args.h"
#include "exports.h"
#include "handle.h"
#include "kvm_vcpu.h"
#include "tagged_external.h"

namespace vfio_bridge {

ExitSnapshot::~ExitSnapshot() {
  for (MapBacking* p : pins) MapUnpin(p);
  for (int fd : fds) close(fd);
}

const ExitEntry* ExitSnapshot::Find(uint64_t addr, uint32_t size) const {
  // The last entry starting at or below addr is the only one that can hold it.
  auto it = std::upper_bound(entries.begin(), entries.end(), addr,
                             [](uint64_t a, const ExitEntry& e) { return a < e.start; });
  if (it == entries.begin()) return nullptr;
  const ExitEntry& e = *(it - 1);
  // addr >= e.start, so end - addr cannot wrap; size is compared without forming addr + size.
  if (addr >= e.end || size > e.end - addr) return nullptr;
  return &e;
}

ExitTableCore::~ExitTableCore() {
  for (auto& c : current_) delete c.exchange(nullptr);
}

void ExitTableCore::Publish(int space, ExitSnapshot* s) {
  const ExitSnapshot* old = current_[space].exchange(s);
  if (old == nullptr) return;
  {
    // A reader holds a snapshot for one access (a load, a store, a pread): wait it out.
    std::lock_guard<std::mutex> lock(readers_mu_);
    for (auto* h : readers_) {
      while (h->load() == old) sched_yield();
    }
  }
  delete old;
}

void ExitTableCore::AddReader(std::atomic<const ExitSnapshot*>* hazard) {
  std::lock_guard<std::mutex> lock(readers_mu_);
  readers_.push_back(hazard);
}

void ExitTableCore::RemoveReader(std::atomic<const ExitSnapshot*>* hazard) {
  std::lock_guard<std::mutex> lock(readers_mu_);
  readers_.erase(std::remove(readers_.begin(), readers_.end(), hazard), readers_.end());
}

namespace {

vfio_bridge_load Load(const volatile uint8_t* p, uint32_t size) {
  switch (size) {
    case 1:
      return vfio_bridge_load8(p);
    case 2:
      return vfio_bridge_load16(p);
    case 4:
      return vfio_bridge_load32(p);
    default:
      return vfio_bridge_load64(p);
  }
}

int Store(volatile uint8_t* p, uint32_t size, uint64_t value) {
  switch (size) {
    case 1:
      return vfio_bridge_store8(p, static_cast<uint8_t>(value));
    case 2:
      return vfio_bridge_store16(p, static_cast<uint16_t>(value));
    case 4:
      return vfio_bridge_store32(p, static_cast<uint32_t>(value));
    default:
      return vfio_bridge_store64(p, value);
  }
}

/** FdAccess - one pread or pwrite of exactly @size bytes; 0 or an errno (EIO when short). */
int FdAccess(int fd, uint8_t* data, uint32_t size, uint64_t offset, bool is_write) {
  ssize_t n;
  do {
    n = is_write ? pwrite(fd, data, size, static_cast<off_t>(offset))
                 : pread(fd, data, size, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(size)) return 0;
  return n < 0 ? errno : EIO;
}

constexpr napi_type_tag kExitTableTag = {0x7666696f2d627269ULL, 0x6467652d65786974ULL};

/** class ExitTableResource - the environment's owner of a table; vCPU threads share the core. */
class ExitTableResource : public Resource {
 public:
  void Release() override { core.reset(); }
  std::shared_ptr<ExitTableCore> core = std::make_shared<ExitTableCore>();
};

void FinalizeExitTable(napi_env, void* data, void*) {
  ReleaseAndForget(static_cast<ExitTableResource*>(data));
}

ExitTableResource* Unwrap(napi_env env, napi_value value, const char* op) {
  return UnwrapShared<ExitTableResource>(env, value, kExitTableTag, op, "an exit table",
                                         "exit table");
}

napi_value Create(napi_env env, napi_callback_info) {
  auto* t = new ExitTableResource();
  napi_value external;
  if (napi_create_external(env, t, FinalizeExitTable, nullptr, &external) != napi_ok) {
    delete t;
    return nullptr;
  }
  ModuleData::Get(env)->Track(t);
  napi_type_tag_object(env, external, &kExitTableTag);
  return external;
}

bool GetSpace(napi_env env, napi_value value, int* space) {
  uint32_t s;
  if (!GetUint32(env, value, "space", &s)) return false;
  if (s > 1) {
    ThrowRangeError(env, "space " + std::to_string(s) + " is not 0 (MMIO) or 1 (port I/O)");
    return false;
  }
  *space = static_cast<int>(s);
  return true;
}

napi_value Property(napi_env env, napi_value object, const char* name) {
  napi_value v;
  napi_get_named_property(env, object, name, &v);
  return v;
}

/** ParseEntry - one entry object into @out, pinning what it needs in @snap. */
bool ParseEntry(napi_env env, napi_value obj, size_t i, ExitSnapshot* snap, ExitEntry* out) {
  const std::string at = "exit table entry " + std::to_string(i);
  uint64_t start, size, offset;
  uint32_t kind;
  bool readonly = false;
  if (!GetSafeInteger(env, Property(env, obj, "start"), (at + " start").c_str(), &start) ||
      !GetSafeInteger(env, Property(env, obj, "size"), (at + " size").c_str(), &size) ||
      !GetSafeInteger(env, Property(env, obj, "offset"), (at + " offset").c_str(), &offset) ||
      !GetUint32(env, Property(env, obj, "kind"), (at + " kind").c_str(), &kind)) {
    return false;
  }
  napi_get_value_bool(env, Property(env, obj, "readonly"), &readonly);
  if (size == 0 || start > static_cast<uint64_t>(kMaxSafeInteger) - size) {
    ThrowRangeError(env, at + ": size " + std::to_string(size) + " at " + std::to_string(start) +
                             " is empty or ends past 2^53");
    return false;
  }
  *out = ExitEntry{start, start + size, ExitEntry::kMmap, readonly, nullptr, -1, 0, 0, nullptr};
  napi_value handle = Property(env, obj, "handle");
  if (kind == 0) {
    HostRange range;
    MapBacking* pin = nullptr;
    if (!MappingPin(env, handle, &range, &pin)) {
      ThrowTypeError(env, at + ": an mmap entry needs a mapping handle");
      return false;
    }
    if (pin == nullptr || range.base == nullptr) {
      ThrowVfioError(env, "exit table", 0, at + ": the mapping is closed", *range.where, "ECLOSED");
      return false;
    }
    snap->pins.push_back(pin);
    if (offset > range.length || size > range.length - offset) {
      ThrowRangeError(env, at + ": offset " + std::to_string(offset) + " size " +
                               std::to_string(size) + " is outside the mapping (length " +
                               std::to_string(range.length) + ")");
      return false;
    }
    if (!readonly && !range.writable) {
      ThrowRangeError(env, at + ": a writable range needs a writable mapping");
      return false;
    }
    // SAFETY: offset + size <= length was checked above: every entry address maps into the pages.
    out->base = range.base + offset;
    return true;
  }
  if (kind == 2) {
    if (size > 8) {
      ThrowRangeError(env,
                      at + ": a constant range is at most 8 bytes, not " + std::to_string(size));
      return false;
    }
    // The value's bytes, little-endian from `start` (JavaScript gives it as a safe integer).
    if (!GetSafeInteger(env, Property(env, obj, "value"), (at + " value").c_str(), &out->value))
      return false;
    out->kind = ExitEntry::kConst;
    out->readonly = true;
    return true;
  }
  if (kind == 3) {
    std::shared_ptr<SinkCore> sink = GetByteSink(env, handle, "exit table");
    if (!sink) return false;
    out->kind = ExitEntry::kSink;
    out->sink = sink.get();
    snap->sinks.push_back(std::move(sink));
    return true;
  }
  if (kind != 1) {
    ThrowRangeError(env, at + ": kind " + std::to_string(kind) +
                             " is not 0 (mmap), 1 (fd), 2 (constant) or 3 (sink)");
    return false;
  }
  FdResource* h = GetHandle(env, handle, "exit table");
  if (h == nullptr) return false;
  int fd = fcntl(h->fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    ThrowErrno(env, "dup", h, errno, at);
    return false;
  }
  snap->fds.push_back(fd);
  out->kind = ExitEntry::kFd;
  out->fd = fd;
  out->file_offset = offset;
  return true;
}

/** Set(table, space, entries) - replace @space's snapshot with @entries (sorted, disjoint). */
napi_value Set(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  ExitTableResource* t = Unwrap(env, args[0], "exitTableSet");
  int space;
  if (t == nullptr || !GetSpace(env, args[1], &space)) return nullptr;
  bool is_array = false;
  napi_is_array(env, args[2], &is_array);
  if (!is_array) return ThrowTypeError(env, "exitTableSet expects an array of entries");
  uint32_t n;
  napi_get_array_length(env, args[2], &n);
  auto snap = std::make_unique<ExitSnapshot>();
  snap->entries.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value obj;
    napi_get_element(env, args[2], i, &obj);
    if (!ParseEntry(env, obj, i, snap.get(), &snap->entries[i])) return nullptr;
    if (i > 0 && snap->entries[i].start < snap->entries[i - 1].end) {
      return ThrowRangeError(
          env, "exit table entry " + std::to_string(i) + " overlaps or precedes the one before it");
    }
  }
  t->core->Publish(space, snap.release());
  return nullptr;
}

/**
 * Lookup(table, space, addr, size, isWrite) - what a vCPU thread would do with this access: null
 * (hand it to JavaScript), or { kind, at } with the host address (mmap) or fd offset (fd).
 */
napi_value Lookup(napi_env env, napi_callback_info info) {
  Args<5> args(env, info);
  ExitTableResource* t = Unwrap(env, args[0], "exitTableLookup");
  int space;
  uint64_t addr;
  uint32_t size;
  bool is_write = false;
  if (t == nullptr || !GetSpace(env, args[1], &space) ||
      !GetSafeInteger(env, args[2], "address", &addr) || !GetUint32(env, args[3], "size", &size)) {
    return nullptr;
  }
  napi_get_value_bool(env, args[4], &is_write);
  std::atomic<const ExitSnapshot*> hazard{nullptr};
  const ExitSnapshot* s = t->core->Acquire(space, &hazard);
  const ExitEntry* e = ServableEntry(s, addr, size, is_write);
  napi_value out;
  if (e == nullptr) {
    napi_get_null(env, &out);
  } else {
    uint64_t delta = addr - e->start;
    uint64_t at = e->kind == ExitEntry::kMmap ? reinterpret_cast<uint64_t>(e->base + delta)
                  : e->kind == ExitEntry::kFd ? e->file_offset + delta
                                              : 0;
    napi_value kind, where;
    napi_create_object(env, &out);
    napi_create_uint32(env, static_cast<uint32_t>(e->kind), &kind);
    napi_create_bigint_uint64(env, at, &where);
    napi_set_named_property(env, out, "kind", kind);
    napi_set_named_property(env, out, "at", where);
  }
  ExitTableCore::Release(&hazard);
  return out;
}

/**
 * Serve(table, space, addr, size, isWrite, value) - serve one access as a vCPU thread would, on
 * this thread: null when JavaScript must, else { value, fault, errno } (value: what a read got, as
 * a bigint). How the tests hold the serving of each kind of range without a guest.
 */
napi_value Serve(napi_env env, napi_callback_info info) {
  Args<6> args(env, info);
  ExitTableResource* t = Unwrap(env, args[0], "exitTableServe");
  int space;
  uint64_t addr, value = 0;
  uint32_t size;
  bool is_write = false, lossless = true;
  if (t == nullptr || !GetSpace(env, args[1], &space) ||
      !GetSafeInteger(env, args[2], "address", &addr) || !GetUint32(env, args[3], "size", &size)) {
    return nullptr;
  }
  napi_get_value_bool(env, args[4], &is_write);
  if (napi_get_value_bigint_uint64(env, args[5], &value, &lossless) != napi_ok)
    return ThrowTypeError(env, "exitTableServe: value must be a bigint");
  uint8_t data[8];
  std::memcpy(data, &value, sizeof data);
  std::atomic<const ExitSnapshot*> hazard{nullptr};
  const ExitSnapshot* s = t->core->Acquire(space, &hazard);
  bool fault;
  int err;
  bool served = ServeAccess(s, addr, size, is_write, data, &fault, &err);
  ExitTableCore::Release(&hazard);
  napi_value out;
  if (!served) {
    napi_get_null(env, &out);
    return out;
  }
  uint64_t got = 0;
  if (!is_write) std::memcpy(&got, data, size <= 8 ? size : 8);
  napi_value v, f, e;
  napi_create_object(env, &out);
  napi_create_bigint_uint64(env, got, &v);
  napi_get_boolean(env, fault, &f);
  napi_create_int32(env, err, &e);
  napi_set_named_property(env, out, "value", v);
  napi_set_named_property(env, out, "fault", f);
  napi_set_named_property(env, out, "errno", e);
  return out;
}

/** Close(table) - drop the environment's reference; running vCPU threads keep theirs. */
napi_value Close(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  ExitTableResource* t = Unwrap(env, args[0], "exitTableClose");
  if (t != nullptr) t->Release();
  return nullptr;
}

}  // namespace

const ExitEntry* ServableEntry(const ExitSnapshot* s, uint64_t addr, uint32_t size, bool is_write) {
  if (s == nullptr || (size != 1 && size != 2 && size != 4 && size != 8)) return nullptr;
  const ExitEntry* e = s->Find(addr, size);
  if (e == nullptr) return nullptr;
  // A write to a read-only range is JavaScript's to report; a constant is read-only.
  if (is_write && e->readonly) return nullptr;
  // A sink takes byte writes; its reads (a UART's receiver behind the same port) are JavaScript's.
  if (e->kind == ExitEntry::kSink && (!is_write || size != 1)) return nullptr;
  // The fd regions take aligned accesses only (as their ops' `unaligned: false`); JavaScript
  // reports the others.
  if (e->kind == ExitEntry::kFd && (e->file_offset + (addr - e->start)) % size != 0) return nullptr;
  return e;
}

bool ServeAccess(const ExitSnapshot* s, uint64_t addr, uint32_t size, bool is_write, uint8_t* data,
                 bool* fault, int* err) {
  *fault = false;
  *err = 0;
  const ExitEntry* e = ServableEntry(s, addr, size, is_write);
  if (e == nullptr) return false;
  uint64_t delta = addr - e->start;
  switch (e->kind) {
    case ExitEntry::kMmap: {
      // SAFETY: ServableEntry found [addr, addr + size) inside the entry, and the entry inside its
      // mapping, whose pages the snapshot pins; the accessor is one access of exactly @size bytes.
      volatile uint8_t* p = e->base + delta;
      if (is_write) {
        uint64_t value = 0;
        std::memcpy(&value, data, size);
        *fault = Store(p, size, value) != 0;
      } else {
        vfio_bridge_load l = Load(p, size);
        *fault = l.fault != 0;
        uint64_t value = *fault ? ~0ULL : l.value;
        std::memcpy(data, &value, size);  // only the access's bytes: none above its width
      }
      return true;
    }
    case ExitEntry::kFd: {
      uint8_t buf[8];
      if (is_write) std::memcpy(buf, data, size);
      *err = FdAccess(e->fd, buf, size, e->file_offset + delta, is_write);
      if (!is_write) {
        if (*err != 0) std::memset(buf, 0xff, size);
        std::memcpy(data, buf, size);
      }
      return true;
    }
    case ExitEntry::kConst: {
      // delta + size <= 8 (the entry is at most 8 bytes): the bytes of the value at the access.
      uint64_t value = e->value >> (8 * delta);
      std::memcpy(data, &value, size);
      return true;
    }
    case ExitEntry::kSink:
      return e->sink->Append(data[0]);
  }
  return false;
}

std::shared_ptr<ExitTableCore> GetExitTable(napi_env env, napi_value value, const char* op) {
  ExitTableResource* t = Unwrap(env, value, op);
  return t == nullptr ? nullptr : t->core;
}

void RegisterExitTable(napi_env env, napi_value exports) {
  const napi_property_descriptor methods[] = {
      Method("exitTableCreate", Create), Method("exitTableSet", Set),
      Method("exitTableLookup", Lookup), Method("exitTableServe", Serve),
      Method("exitTableClose", Close),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
