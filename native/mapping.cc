// Mappings: an mmap'd range of an fd (a device region, a memfd, a file) and its fixed-width
// accessors.
//
// The single accessors are per-environment functions with no arguments: JavaScript writes the
// mapping's slot and the offset into the environment's HotScratch, calls, and reads the value
// back. That costs one N-API call and no N-API helper calls; the environment's ModuleData is
// found through a per-thread cache keyed by napi_env (falling back to napi_get_instance_data), so
// correctness never depends on the cache. Block accessors and close() take the mapping's handle.
//
// A MappingState is owned by its handle (an external): it is unmapped by close(), when the handle
// is garbage-collected, or at environment teardown; its slot is freed only when the handle is
// collected, so a slot can never be reached through a stale Mapping.
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "accessors.h"
#include "args.h"
#include "errors.h"
#include "exports.h"
#include "fault_guard.h"
#include "host_memory.h"
#include "module.h"
#include "tagged_external.h"

namespace vfio_bridge {

/** class MappingState - one mapping. */
class MappingState : public Resource {
 public:
  void Release() override {
    if (backing != nullptr) MapUnpin(backing);
    backing = nullptr;
    base = nullptr;
  }

  uint8_t* base = nullptr;  // start of the caller's range; nullptr once closed
  uint64_t length = 0;
  // The pages actually mapped. A vCPU thread's exit table may pin them (MappingPin), so close()
  // drops this mapping's reference and the last reference unmaps.
  MapBacking* backing = nullptr;
  bool writable = false;
  uint32_t slot = 0;
  ErrorContext where;
};

namespace {

// A cache, not state: the last environment that used the accessors on this thread. Node runs one
// environment per thread, so this nearly always hits; a miss asks N-API. Initial-exec TLS keeps
// the lookup to a single %fs-relative load.
struct ModuleCache {
  napi_env env;
  ModuleData* module;
};
thread_local ModuleCache t_module_cache
    __attribute__((tls_model("initial-exec"))) = {nullptr, nullptr};

inline ModuleData* FastModule(napi_env env) {
  if (t_module_cache.env == env) [[likely]] {
    return t_module_cache.module;
  }
  ModuleData* module = ModuleData::Get(env);
  t_module_cache = {env, module};
  return module;
}

void ClearModuleCache(void* env) {
  if (t_module_cache.env == static_cast<napi_env>(env)) t_module_cache = {nullptr, nullptr};
}

// Distinguishes mapping handles from any other external in the process.
constexpr napi_type_tag kMappingTag = {0x7666696f2d627269ULL, 0x6467652d6d617070ULL};

std::string Hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

[[gnu::noinline, gnu::cold]] napi_value ThrowClosed(napi_env env, const char* op, MappingState* m) {
  return ThrowVfioError(env, op, 0, "the mapping is closed", m->where, "ECLOSED");
}

[[gnu::noinline, gnu::cold]] napi_value ThrowFault(napi_env env, const char* op, MappingState* m,
                                                   uint64_t off) {
  return ThrowVfioError(env, op, 0, "bus error at offset " + Hex(off) + " of the mapping", m->where,
                        "SIGBUS");
}

[[gnu::noinline, gnu::cold]] void ThrowOutOfRange(napi_env env, MappingState* m, uint64_t off,
                                                  uint64_t width, const char* op) {
  ThrowRangeError(env, std::string(op) + ": offset " + std::to_string(off) + " width " +
                           std::to_string(width) + " is outside the mapping (length " +
                           std::to_string(m->length) + ")");
}

[[gnu::noinline, gnu::cold]] napi_value ThrowBadSlot(napi_env env, const char* op) {
  return ThrowVfioError(env, op, 0, "no such mapping", ErrorContext{}, "ECLOSED");
}

/**
 * CheckRange - an access of @width bytes at @off must lie inside an open mapping. The sum is never
 * formed, so no offset can wrap around.
 */
inline bool CheckRange(napi_env env, MappingState* m, uint64_t off, uint64_t width,
                       const char* op) {
  if (m->base == nullptr) [[unlikely]] {
    ThrowClosed(env, op, m);
    return false;
  }
  if (off > m->length || width > m->length - off) [[unlikely]] {
    ThrowOutOfRange(env, m, off, width, op);
    return false;
  }
  return true;
}

inline bool CheckWritable(napi_env env, MappingState* m, const char* op) {
  if (m->writable) [[likely]] {
    return true;
  }
  ThrowTypeError(env, std::string(op) + ": the mapping is read-only");
  return false;
}

/** HotMapping - the mapping named by the scratch slot, or nullptr after throwing. */
inline MappingState* HotMapping(napi_env env, ModuleData* md, const char* op) {
  uint32_t slot = md->scratch->slot;
  if (slot >= md->mappings.size() || md->mappings[slot] == nullptr) [[unlikely]] {
    ThrowBadSlot(env, op);
    return nullptr;
  }
  return md->mappings[slot];
}

using LoadFn = vfio_bridge_load (*)(const volatile void*);

template <unsigned W, LoadFn Load>
napi_value Read(napi_env env, const char* op) {
  ModuleData* md = FastModule(env);
  uint64_t off = md->scratch->offset;
  md->scratch->offset = 0;  // consumed first: JavaScript writes only the low word below 2^32
  MappingState* m = HotMapping(env, md, op);
  if (m == nullptr) return nullptr;
  if (!CheckRange(env, m, off, W, op)) return nullptr;
  // SAFETY: CheckRange proved off + W <= length on an open mapping; Load is one W-byte mov.
  vfio_bridge_load r = Load(m->base + off);
  if (r.fault) [[unlikely]] {
    return ThrowFault(env, op, m, off);
  }
  // The value must fit its width whatever the CPU left above it: under TCG a narrow MMIO load
  // (even movzbl) can come back with stale upper bits, so they are cleared here, once.
  md->scratch->value = W == 8 ? r.value : r.value & ((uint64_t{1} << (8 * W)) - 1);
  return nullptr;
}

napi_value Read8(napi_env e, napi_callback_info) {
  return Read<1, vfio_bridge_load8>(e, "mapping.read8");
}
napi_value Read16(napi_env e, napi_callback_info) {
  return Read<2, vfio_bridge_load16>(e, "mapping.read16");
}
napi_value Read32(napi_env e, napi_callback_info) {
  return Read<4, vfio_bridge_load32>(e, "mapping.read32");
}
napi_value Read64(napi_env e, napi_callback_info) {
  return Read<8, vfio_bridge_load64>(e, "mapping.read64");
}

template <unsigned W>
napi_value Write(napi_env env, const char* op) {
  ModuleData* md = FastModule(env);
  uint64_t off = md->scratch->offset;
  md->scratch->offset = 0;  // consumed first: JavaScript writes only the low word below 2^32
  MappingState* m = HotMapping(env, md, op);
  if (m == nullptr) return nullptr;
  if (!CheckRange(env, m, off, W, op) || !CheckWritable(env, m, op)) return nullptr;
  // Narrow stores use only the low word of the value; JavaScript checked its range, and the
  // check below keeps the native side honest for 1- and 2-byte stores.
  uint64_t v = W == 8 ? md->scratch->value : static_cast<uint32_t>(md->scratch->value);
  if (W < 4 && (v >> (W < 4 ? 8 * W : 0)) != 0) [[unlikely]] {
    return ThrowRangeError(env, std::string(op) + ": value " + std::to_string(v) +
                                    " does not fit in " + std::to_string(W) + " byte(s)");
  }
  int fault = 0;
  // SAFETY: CheckRange proved off + W <= length on an open mapping; each store is one W-byte mov.
  if constexpr (W == 1) fault = vfio_bridge_store8(m->base + off, static_cast<uint8_t>(v));
  if constexpr (W == 2) fault = vfio_bridge_store16(m->base + off, static_cast<uint16_t>(v));
  if constexpr (W == 4) fault = vfio_bridge_store32(m->base + off, static_cast<uint32_t>(v));
  if constexpr (W == 8) fault = vfio_bridge_store64(m->base + off, v);
  if (fault) [[unlikely]] {
    return ThrowFault(env, op, m, off);
  }
  return nullptr;
}

napi_value Write8(napi_env e, napi_callback_info) { return Write<1>(e, "mapping.write8"); }
napi_value Write16(napi_env e, napi_callback_info) { return Write<2>(e, "mapping.write16"); }
napi_value Write32(napi_env e, napi_callback_info) { return Write<4>(e, "mapping.write32"); }
napi_value Write64(napi_env e, napi_callback_info) { return Write<8>(e, "mapping.write64"); }

/** GetMapping - the MappingState behind a handle, or nullptr after a TypeError. */
MappingState* GetMapping(napi_env env, napi_value value, const char* op) {
  auto* m = static_cast<MappingState*>(TaggedExternal(env, value, kMappingTag));
  if (m == nullptr) ThrowTypeError(env, std::string(op) + " expects a mapping handle");
  return m;
}

/**
 * GetBlock - validate a block access: width in {1,2,4,8}; @array a TypedArray whose byteLength is
 * at least count * width (or, when @count_from_array, exactly a multiple of width that gives the
 * count); off + count * width inside the mapping.
 */
bool GetBlock(napi_env env, MappingState* m, napi_value off_value, napi_value count_value,
              napi_value width_value, napi_value array, bool count_from_array, const char* op,
              uint64_t* off, uint64_t* count, uint32_t* width, uint8_t** memory) {
  if (!GetUint32(env, width_value, "width", width)) return false;
  if (*width != 1 && *width != 2 && *width != 4 && *width != 8) {
    ThrowRangeError(env,
                    std::string(op) + ": width " + std::to_string(*width) + " is not 1, 2, 4 or 8");
    return false;
  }
  bool is_typed = false;
  napi_typedarray_type type;
  size_t n = 0;
  void* data = nullptr;
  napi_is_typedarray(env, array, &is_typed);
  if (!is_typed) {
    ThrowTypeError(env, std::string(op) + ": expected a TypedArray");
    return false;
  }
  napi_get_typedarray_info(env, array, &type, &n, &data, nullptr, nullptr);
  size_t element = 1;
  switch (type) {
    case napi_uint16_array:
    case napi_int16_array:
      element = 2;
      break;
    case napi_uint32_array:
    case napi_int32_array:
    case napi_float32_array:
      element = 4;
      break;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array:
      element = 8;
      break;
    default:
      break;
  }
  uint64_t bytes = static_cast<uint64_t>(n) * element;
  if (count_from_array) {
    if (bytes % *width != 0) {
      ThrowRangeError(env, std::string(op) + ": data length " + std::to_string(bytes) +
                               " bytes is not a multiple of width " + std::to_string(*width));
      return false;
    }
    *count = bytes / *width;
  } else {
    if (!GetSafeInteger(env, count_value, "count", count)) return false;
    // count <= 2^53 and width <= 8, so the product cannot overflow 64 bits.
    if (*count * *width > bytes) {
      ThrowRangeError(env, std::string(op) + ": destination holds " + std::to_string(bytes) +
                               " bytes, needs " + std::to_string(*count * *width));
      return false;
    }
  }
  if (!GetSafeInteger(env, off_value, "offset", off)) return false;
  if (m->base == nullptr) {
    ThrowClosed(env, op, m);
    return false;
  }
  // Neither off + total nor anything that could wrap is formed: off is tested first.
  uint64_t total = *count * *width;
  if (*off > m->length || total > m->length - *off) {
    ThrowRangeError(env, std::string(op) + ": offset " + std::to_string(*off) + " count " +
                             std::to_string(*count) + " width " + std::to_string(*width) +
                             " is outside the mapping (length " + std::to_string(m->length) + ")");
    return false;
  }
  *memory = static_cast<uint8_t*>(data);
  return true;
}

/** ReadBlock(handle, off, count, width, into) - count loads of width bytes into the TypedArray. */
napi_value ReadBlock(napi_env env, napi_callback_info info) {
  const char* op = "mapping.readBlock";
  Args<5> args(env, info);
  MappingState* m = GetMapping(env, args[0], op);
  if (m == nullptr) return nullptr;
  uint64_t off, count;
  uint32_t width;
  uint8_t* into;
  if (!GetBlock(env, m, args[1], args[2], args[3], args[4], false, op, &off, &count, &width,
                &into)) {
    return nullptr;
  }
  size_t left = 0;
  // SAFETY: GetBlock proved off + count * width <= length and that `into` holds count * width
  // bytes; each loop iteration loads one width-sized element.
  const uint8_t* src = m->base + off;
  switch (width) {
    case 1:
      left = vfio_bridge_read_block8(into, src, count);
      break;
    case 2:
      left = vfio_bridge_read_block16(into, src, count);
      break;
    case 4:
      left = vfio_bridge_read_block32(into, src, count);
      break;
    case 8:
      left = vfio_bridge_read_block64(into, src, count);
      break;
  }
  if (left != 0) return ThrowFault(env, op, m, off + (count - left) * width);
  return nullptr;
}

/** WriteBlock(handle, off, data, width) - one store of width bytes per element of data. */
napi_value WriteBlock(napi_env env, napi_callback_info info) {
  const char* op = "mapping.writeBlock";
  Args<4> args(env, info);
  MappingState* m = GetMapping(env, args[0], op);
  if (m == nullptr) return nullptr;
  uint64_t off, count;
  uint32_t width;
  uint8_t* from;
  if (!GetBlock(env, m, args[1], nullptr, args[3], args[2], true, op, &off, &count, &width,
                &from) ||
      !CheckWritable(env, m, op)) {
    return nullptr;
  }
  size_t left = 0;
  // SAFETY: GetBlock proved off + count * width <= length; each iteration stores one element.
  uint8_t* dst = m->base + off;
  switch (width) {
    case 1:
      left = vfio_bridge_write_block8(dst, from, count);
      break;
    case 2:
      left = vfio_bridge_write_block16(dst, from, count);
      break;
    case 4:
      left = vfio_bridge_write_block32(dst, from, count);
      break;
    case 8:
      left = vfio_bridge_write_block64(dst, from, count);
      break;
  }
  if (left != 0) return ThrowFault(env, op, m, off + (count - left) * width);
  return nullptr;
}

/** Unmap(handle) - unmap now; idempotent. Later accesses throw ECLOSED. */
napi_value Unmap(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  MappingState* m = GetMapping(env, args[0], "mapping.close");
  if (m == nullptr) return nullptr;
  MapBacking* backing = m->backing;
  m->backing = nullptr;
  m->base = nullptr;
  if (backing != nullptr) {
    int err = MapUnpin(backing);
    if (err != 0) return ThrowVfioError(env, "munmap", err, "", m->where);
  }
  return nullptr;
}

void FinalizeMapping(napi_env, void* data, void*) {
  auto* m = static_cast<MappingState*>(data);
  ModuleData* md = m->module;
  if (md != nullptr && m->slot < md->mappings.size() && md->mappings[m->slot] == m) {
    md->mappings[m->slot] = nullptr;
    md->free_slots.push_back(m->slot);
  }
  ReleaseAndForget(m);
}

/**
 * Mmap(fd, offset, length, writable, path, bdf) - MAP_SHARED mapping of [offset, offset + length)
 * of @fd. The offset need not be page-aligned: the mapping starts at the page below it. Returns
 * { handle, slot }: the handle for the block accessors and close, the slot for the HotScratch.
 */
napi_value Mmap(napi_env env, napi_callback_info info) {
  Args<6> args(env, info);
  uint32_t fd;
  uint64_t offset, length;
  bool writable = false;
  ErrorContext where;
  if (!GetUint32(env, args[0], "fd", &fd) || !GetSafeInteger(env, args[1], "offset", &offset) ||
      !GetSafeInteger(env, args[2], "length", &length)) {
    return nullptr;
  }
  if (napi_get_value_bool(env, args[3], &writable) != napi_ok) {
    return ThrowTypeError(env, "writable must be a boolean");
  }
  napi_valuetype type;
  napi_typeof(env, args[4], &type);
  if (type == napi_string && !GetString(env, args[4], "path", &where.path)) return nullptr;
  napi_typeof(env, args[5], &type);
  if (type == napi_string && !GetString(env, args[5], "bdf", &where.bdf)) return nullptr;
  if (length == 0) return ThrowRangeError(env, "mmap: length must be at least 1");
  if (fd > INT32_MAX) {
    return ThrowRangeError(env, "mmap: fd " + std::to_string(fd) + " is invalid");
  }

  // A process.on('SIGBUS') listener added since the last mapping replaced the guard with libuv's
  // handler, under which a revoked mapping would fault for ever; take the guard back here, where
  // it costs nothing per access.
  AssertFaultGuard();

  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t aligned = offset & ~(page - 1);
  uint64_t map_len = (offset - aligned) + length;  // both terms <= 2^53: no overflow
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* addr =
      mmap(nullptr, map_len, prot, MAP_SHARED, static_cast<int>(fd), static_cast<off_t>(aligned));
  if (addr == MAP_FAILED) {
    int err = errno;  // before the message is built: allocation may overwrite errno
    return ThrowVfioError(
        env, "mmap", err,
        "fd " + std::to_string(fd) + " offset " + Hex(offset) + " length " + Hex(length), where);
  }

  auto* m = new MappingState();
  m->backing = new MapBacking{addr, map_len, {1}};
  // SAFETY: offset - aligned < page <= map_len, so base stays inside the mapping just made.
  m->base = static_cast<uint8_t*>(addr) + (offset - aligned);
  m->length = length;
  m->writable = writable;
  m->where = std::move(where);

  napi_value handle;
  if (napi_create_external(env, m, FinalizeMapping, nullptr, &handle) != napi_ok) {
    m->Release();
    delete m;
    return nullptr;
  }
  napi_type_tag_object(env, handle, &kMappingTag);
  ModuleData* md = ModuleData::Get(env);
  md->Track(m);
  if (!md->free_slots.empty()) {
    m->slot = md->free_slots.back();
    md->free_slots.pop_back();
    md->mappings[m->slot] = m;
  } else {
    m->slot = static_cast<uint32_t>(md->mappings.size());
    md->mappings.push_back(m);
  }

  napi_value result, slot;
  napi_create_object(env, &result);
  napi_create_uint32(env, m->slot, &slot);
  napi_set_named_property(env, result, "handle", handle);
  napi_set_named_property(env, result, "slot", slot);
  return result;
}

/** Memfd(name, size) - memfd_create(MFD_CLOEXEC) + ftruncate; returns the fd. */
napi_value Memfd(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  std::string name;
  uint64_t size;
  if (!GetString(env, args[0], "name", &name) || !GetSafeInteger(env, args[1], "size", &size)) {
    return nullptr;
  }
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return ThrowVfioError(env, "memfd_create", err, name, ErrorContext{});
  }
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    return ThrowVfioError(env, "ftruncate", err, name, ErrorContext{});
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

/**
 * Address(mapping) - the host address of the mapping's first byte, as a bigint: what KVM memory
 * slots and DMA maps are given. The mapping must stay open while they use it.
 */
napi_value Address(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  MappingState* m = GetMapping(env, args[0], "mapping.hostAddress");
  if (m == nullptr) return nullptr;
  if (m->base == nullptr) return ThrowClosed(env, "mapping.hostAddress", m);
  napi_value out;
  napi_create_bigint_uint64(env, reinterpret_cast<uint64_t>(m->base), &out);
  return out;
}

// The scratch lives in ModuleData; Node detaches the ArrayBuffer at teardown because it has a
// finalizer, so JavaScript can never reach the memory after ModuleData is gone.
void FinalizeScratch(napi_env, void*, void*) {}

/**
 * UseScratch - useMappingScratch(buffer): the accessors take their operands from @buffer (an
 * ArrayBuffer of at least sizeof(HotScratch) bytes, 8-byte aligned) from now on. The buffer is
 * referenced until it is replaced or the environment ends; its backing store never moves.
 */
napi_value UseScratch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  napi_get_cb_info(env, info, &argc, &arg, nullptr, nullptr);
  bool is_buffer = false;
  void* data = nullptr;
  size_t length = 0;
  if (argc < 1 || napi_is_arraybuffer(env, arg, &is_buffer) != napi_ok || !is_buffer ||
      napi_get_arraybuffer_info(env, arg, &data, &length) != napi_ok) {
    return ThrowTypeError(env, "useMappingScratch expects an ArrayBuffer");
  }
  if (length < sizeof(HotScratch) || reinterpret_cast<uintptr_t>(data) % alignof(HotScratch) != 0) {
    return ThrowRangeError(env, "useMappingScratch: the buffer must be at least " +
                                    std::to_string(sizeof(HotScratch)) + " bytes, 8-byte aligned");
  }
  ModuleData* md = ModuleData::Get(env);
  napi_ref ref;
  if (napi_create_reference(env, arg, 1, &ref) != napi_ok) return nullptr;
  if (md->scratch_ref != nullptr) napi_delete_reference(env, md->scratch_ref);
  md->scratch_ref = ref;
  md->scratch = static_cast<HotScratch*>(data);
  *md->scratch = {};
  return nullptr;
}

}  // namespace

bool MappingHostRange(napi_env env, napi_value value, HostRange* out) {
  auto* m = static_cast<MappingState*>(TaggedExternal(env, value, kMappingTag));
  if (m == nullptr) return false;
  out->base = m->base;
  out->length = m->length;
  out->writable = m->writable;
  out->where = &m->where;
  return true;
}

bool MappingPin(napi_env env, napi_value value, HostRange* out, MapBacking** pin) {
  if (!MappingHostRange(env, value, out)) return false;
  void* data = nullptr;
  napi_get_value_external(env, value, &data);
  auto* m = static_cast<MappingState*>(data);
  *pin = m->backing;
  if (m->backing != nullptr) m->backing->refs.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int MapUnpin(MapBacking* b) {
  if (b->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return 0;
  int err = munmap(b->addr, b->len) == 0 ? 0 : errno;
  delete b;
  return err;
}

void ForgetModuleCache(ModuleData* module) {
  if (t_module_cache.module == module) t_module_cache = {nullptr, nullptr};
}

void RegisterMapping(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("mmap", Mmap),
      Method("memfd", Memfd),
      Method("mapRead8", Read8),
      Method("mapRead16", Read16),
      Method("mapRead32", Read32),
      Method("mapRead64", Read64),
      Method("mapWrite8", Write8),
      Method("mapWrite16", Write16),
      Method("mapWrite32", Write32),
      Method("mapWrite64", Write64),
      Method("mapReadBlock", ReadBlock),
      Method("mapWriteBlock", WriteBlock),
      Method("mapAddress", Address),
      Method("unmap", Unmap),
      Method("useMappingScratch", UseScratch),
  };
  DefineMethods(env, exports, methods);

  ModuleData* md = ModuleData::Get(env);
  napi_value scratch;
  napi_create_external_arraybuffer(env, &md->own_scratch, sizeof md->own_scratch, FinalizeScratch,
                                   nullptr, &scratch);
  exports.Set("mappingScratch", scratch);
  exports.Set("pageSize", Napi::Number::New(env, static_cast<double>(sysconf(_SC_PAGESIZE))));
  napi_add_env_cleanup_hook(env, ClearModuleCache, env);
}

}  // namespace vfio_bridge
