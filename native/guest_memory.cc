// Guest RAM: a memfd (optionally on huge pages) mapped MAP_SHARED once, shown to JavaScript as one
// external ArrayBuffer without a copy. The fd stays open so another thread can map the same pages
// (attach) and so the IOMMU and KVM can be given the host range.
//
// A GuestMemoryState is owned jointly by its handle (an external) and by the ArrayBuffer made over
// it: the pages stay mapped until both are finalized, or until close(), which first detaches the
// ArrayBuffer so that no view can reach unmapped memory.
#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "args.h"
#include "errors.h"
#include "exports.h"
#include "host_memory.h"
#include "module.h"
#include "symbol_versions.h"
#include "tagged_external.h"

namespace vfio_bridge {

/** class GuestMemoryState - one mapped memfd. */
class GuestMemoryState : public Resource {
 public:
  void Release() override {
    // The pages go with the last reference: a KVM memory slot may still hold one (GuestMemoryPin).
    if (backing != nullptr) MapUnpin(backing);
    backing = nullptr;
    addr = nullptr;
    if (fd >= 0) close(fd);
    fd = -1;
  }

  uint8_t* addr = nullptr;  // nullptr once closed
  MapBacking* backing = nullptr;
  uint64_t length = 0;
  int fd = -1;
  bool handle_alive = true;
  uint32_t buffers_alive = 0;
  ErrorContext where;
};

namespace {

constexpr napi_type_tag kGuestMemoryTag = {0x7666696f2d627269ULL, 0x6467652d67756573ULL};

GuestMemoryState* Unwrap(napi_env env, napi_value value) {
  return static_cast<GuestMemoryState*>(TaggedExternal(env, value, kGuestMemoryTag));
}

GuestMemoryState* GetState(napi_env env, napi_value value, const char* op) {
  GuestMemoryState* s = Unwrap(env, value);
  if (s == nullptr) ThrowTypeError(env, std::string(op) + " expects a guest memory handle");
  return s;
}

// The last of the two owners to go deletes the state.
void MaybeDelete(GuestMemoryState* s) {
  if (!s->handle_alive && s->buffers_alive == 0) ReleaseAndForget(s);
}

void FinalizeHandle(napi_env, void* data, void*) {
  auto* s = static_cast<GuestMemoryState*>(data);
  s->handle_alive = false;
  MaybeDelete(s);
}

void FinalizeBuffer(napi_env, void*, void* hint) {
  auto* s = static_cast<GuestMemoryState*>(hint);
  s->buffers_alive--;
  MaybeDelete(s);
}

/** Wrap - hand @s to JavaScript as a tagged external; nullptr after releasing @s on failure. */
napi_value Wrap(napi_env env, GuestMemoryState* s) {
  napi_value handle;
  if (napi_create_external(env, s, FinalizeHandle, nullptr, &handle) != napi_ok) {
    s->Release();
    delete s;
    return nullptr;
  }
  napi_type_tag_object(env, handle, &kGuestMemoryTag);
  ModuleData::Get(env)->Track(s);
  return handle;
}

/** MapShared - mmap @fd read/write, shared; returns MAP_FAILED with errno set on failure. */
void* MapShared(int fd, uint64_t length) {
  return mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
}

/**
 * MapAndWrap - map @size bytes of @fd shared and wrap them as guest memory that owns @fd; on
 * failure @fd is closed and a VfioError naming @what is thrown.
 */
napi_value MapAndWrap(napi_env env, int fd, uint64_t size, const std::string& what,
                      ErrorContext where) {
  void* addr = MapShared(fd, size);
  if (addr == MAP_FAILED) {
    int err = errno;
    close(fd);
    return ThrowVfioError(env, "mmap", err, what, where);
  }
  auto* s = new GuestMemoryState();
  s->addr = static_cast<uint8_t*>(addr);
  s->backing = new MapBacking{addr, size, {1}};
  s->length = size;
  s->fd = fd;
  s->where = std::move(where);
  return Wrap(env, s);
}

/**
 * Create(name, size, flags) - memfd_create(name, MFD_CLOEXEC | flags) where @flags may carry
 * MFD_HUGETLB and a huge page size; ftruncate to @size; mmap it. Returns the handle.
 */
napi_value Create(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  std::string name;
  uint64_t size;
  uint32_t flags;
  if (!GetString(env, args[0], "name", &name) || !GetSafeInteger(env, args[1], "size", &size) ||
      !GetUint32(env, args[2], "flags", &flags)) {
    return nullptr;
  }
  if (size == 0) return ThrowRangeError(env, "guest memory size must be at least 1 byte");
  if ((flags & ~(MFD_HUGETLB | (MFD_HUGE_MASK << MFD_HUGE_SHIFT))) != 0) {
    return ThrowRangeError(env, "guest memory flags " + std::to_string(flags) +
                                    " carry more than MFD_HUGETLB and a huge page size");
  }
  ErrorContext where;
  where.path = "memfd:" + name;
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | flags);
  if (fd < 0) {
    int err = errno;
    return ThrowVfioError(env, "memfd_create", err, name, where);
  }
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    return ThrowVfioError(env, "ftruncate", err, name + " to " + std::to_string(size) + " bytes",
                          where);
  }
  return MapAndWrap(env, fd, size, name + " of " + std::to_string(size) + " bytes",
                    std::move(where));
}

/**
 * Attach(fd, size, dev, ino) - map guest memory another thread created: dup @fd, check that the
 * duplicate is still the same file (st_dev, st_ino) so a closed and reused fd number is refused,
 * and map @size bytes of it.
 */
napi_value Attach(napi_env env, napi_callback_info info) {
  Args<4> args(env, info);
  uint32_t fd;
  uint64_t size, dev, ino;
  if (!GetUint32(env, args[0], "fd", &fd) || !GetSafeInteger(env, args[1], "size", &size) ||
      !GetSafeInteger(env, args[2], "dev", &dev) || !GetSafeInteger(env, args[3], "ino", &ino)) {
    return nullptr;
  }
  if (size == 0) return ThrowRangeError(env, "guest memory size must be at least 1 byte");
  ErrorContext where;
  where.path = "fd " + std::to_string(fd);
  int dup_fd = fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) {
    int err = errno;
    return ThrowVfioError(env, "fcntl(F_DUPFD_CLOEXEC)", err, "the guest memory's fd", where);
  }
  struct stat st;
  if (FstatFd(dup_fd, &st) != 0) {
    int err = errno;
    close(dup_fd);
    return ThrowVfioError(env, "fstat", err, "the guest memory's fd", where);
  }
  if (static_cast<uint64_t>(st.st_dev) != dev || static_cast<uint64_t>(st.st_ino) != ino) {
    close(dup_fd);
    return ThrowVfioError(env, "attach", EBADF,
                          "fd " + std::to_string(fd) +
                              " is no longer the guest memory that was shared (it was closed)",
                          where);
  }
  if (static_cast<uint64_t>(st.st_size) < size) {
    close(dup_fd);
    return ThrowRangeError(env, "guest memory file holds " + std::to_string(st.st_size) +
                                    " bytes, fewer than the " + std::to_string(size) + " asked");
  }
  return MapAndWrap(env, dup_fd, size, std::to_string(size) + " bytes", std::move(where));
}

/**
 * Buffer(handle, offset, length) - an external ArrayBuffer over [offset, offset + length) of the
 * memory. Node 20 limits one ArrayBuffer to 4 GiB, so larger memory is shown through windows.
 */
napi_value Buffer(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  GuestMemoryState* s = GetState(env, args[0], "guestMemory.buffer");
  uint64_t offset, length;
  if (s == nullptr || !GetSafeInteger(env, args[1], "offset", &offset) ||
      !GetSafeInteger(env, args[2], "length", &length)) {
    return nullptr;
  }
  if (s->addr == nullptr) {
    return ThrowVfioError(env, "guestMemory.buffer", 0, "the guest memory is closed", s->where,
                          "ECLOSED");
  }
  if (offset > s->length || length > s->length - offset) {
    return ThrowRangeError(env, "guestMemory.buffer: offset " + std::to_string(offset) +
                                    " length " + std::to_string(length) +
                                    " is outside the memory (length " + std::to_string(s->length) +
                                    ")");
  }
  napi_value out;
  // SAFETY: [offset, offset + length) lies in the mapping, which stays mapped until every owner
  // is gone or close() has detached every buffer made here.
  if (napi_create_external_arraybuffer(env, s->addr + offset, length, FinalizeBuffer, s, &out) !=
      napi_ok) {
    return nullptr;
  }
  s->buffers_alive++;
  return out;
}

/**
 * Fill(handle, offset, length, byte) - memset [offset, offset + length) of the mapping to @byte,
 * the pages staying in place (a hole punched instead would leave the IOMMU pinning pages the
 * mapping no longer shows).
 */
napi_value Fill(napi_env env, napi_callback_info info) {
  Args<4> args(env, info);
  GuestMemoryState* s = GetState(env, args[0], "guestMemory.fill");
  uint64_t offset, length;
  uint32_t byte;
  if (s == nullptr || !GetSafeInteger(env, args[1], "offset", &offset) ||
      !GetSafeInteger(env, args[2], "length", &length) || !GetUint32(env, args[3], "byte", &byte)) {
    return nullptr;
  }
  if (s->addr == nullptr) {
    return ThrowVfioError(env, "guestMemory.fill", 0, "the guest memory is closed", s->where,
                          "ECLOSED");
  }
  if (byte > 0xff) {
    return ThrowRangeError(
        env, "guestMemory.fill: byte " + std::to_string(byte) + " is not in [0, 255]");
  }
  if (offset > s->length || length > s->length - offset) {
    return ThrowRangeError(env, "guestMemory.fill: offset " + std::to_string(offset) + " length " +
                                    std::to_string(length) + " is outside the memory (length " +
                                    std::to_string(s->length) + ")");
  }
  // SAFETY: [offset, offset + length) lies in the mapping (checked above without overflow), which
  // is mapped while s->addr is set.
  memset(s->addr + offset, static_cast<int>(byte), length);
  return nullptr;
}

/** Info(handle) - { address: bigint, fd, length, dev, ino } of open guest memory. */
napi_value Info(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  GuestMemoryState* s = GetState(env, args[0], "guestMemory.info");
  if (s == nullptr) return nullptr;
  if (s->addr == nullptr) {
    return ThrowVfioError(env, "guestMemory.info", 0, "the guest memory is closed", s->where,
                          "ECLOSED");
  }
  struct stat st;
  if (FstatFd(s->fd, &st) != 0) {
    int err = errno;
    return ThrowVfioError(env, "fstat", err, "the guest memory's fd", s->where);
  }
  napi_value out, address, fd, length, dev, ino;
  napi_create_object(env, &out);
  napi_create_bigint_uint64(env, reinterpret_cast<uint64_t>(s->addr), &address);
  napi_create_int32(env, s->fd, &fd);
  napi_create_double(env, static_cast<double>(s->length), &length);
  napi_create_double(env, static_cast<double>(st.st_dev), &dev);
  napi_create_double(env, static_cast<double>(st.st_ino), &ino);
  napi_set_named_property(env, out, "address", address);
  napi_set_named_property(env, out, "fd", fd);
  napi_set_named_property(env, out, "length", length);
  napi_set_named_property(env, out, "dev", dev);
  napi_set_named_property(env, out, "ino", ino);
  return out;
}

/**
 * Close(handle, buffers) - detach every ArrayBuffer in @buffers (all those made over this memory
 * and still alive), then unmap and close the fd. Idempotent.
 */
napi_value Close(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  GuestMemoryState* s = GetState(env, args[0], "guestMemory.close");
  if (s == nullptr) return nullptr;
  if (s->addr == nullptr) return nullptr;
  bool is_array = false;
  uint32_t n = 0;
  napi_is_array(env, args[1], &is_array);
  if (!is_array) return ThrowTypeError(env, "guestMemory.close needs the array of its buffers");
  napi_get_array_length(env, args[1], &n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value ab;
    bool is_ab = false;
    void* data = nullptr;
    size_t len = 0;
    napi_get_element(env, args[1], i, &ab);
    napi_is_arraybuffer(env, ab, &is_ab);
    if (is_ab) napi_get_arraybuffer_info(env, ab, &data, &len);
    auto* p = static_cast<uint8_t*>(data);
    bool detached = false;
    napi_is_detached_arraybuffer(env, ab, &detached);
    if (!is_ab || (!detached && (p < s->addr || p + len > s->addr + s->length))) {
      return ThrowTypeError(env, "guestMemory.close: element " + std::to_string(i) +
                                     " is not an ArrayBuffer over this memory");
    }
    if (!detached && napi_detach_arraybuffer(env, ab) != napi_ok) return nullptr;
  }
  s->Release();
  return nullptr;
}

}  // namespace

bool GuestMemoryHostRange(napi_env env, napi_value value, HostRange* out) {
  GuestMemoryState* s = Unwrap(env, value);
  if (s == nullptr) return false;
  out->base = s->addr;
  out->length = s->length;
  out->writable = true;
  out->where = &s->where;
  return true;
}

bool GuestMemoryPin(napi_env env, napi_value value, HostRange* out, MapBacking** pin) {
  if (!GuestMemoryHostRange(env, value, out)) return false;
  GuestMemoryState* s = Unwrap(env, value);
  *pin = s->backing;
  if (s->backing != nullptr) s->backing->refs.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool MemoryPin(napi_env env, napi_value value, HostRange* out, MapBacking** pin) {
  return MappingPin(env, value, out, pin) || GuestMemoryPin(env, value, out, pin);
}

void RegisterGuestMemory(napi_env env, napi_value exports) {
  const napi_property_descriptor methods[] = {
      Method("guestMemoryCreate", Create), Method("guestMemoryAttach", Attach),
      Method("guestMemoryBuffer", Buffer), Method("guestMemoryFill", Fill),
      Method("guestMemoryInfo", Info),     Method("guestMemoryClose", Close),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
