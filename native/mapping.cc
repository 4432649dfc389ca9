// Mappings: an mmap'd range of an fd (a device region, a memfd, a file) and its fixed-width
// accessors.
//
// Each mapping's accessors are N-API functions whose data pointer is the mapping itself, so an
// access costs one N-API call with no unwrap and no lookup. The functions share a reference count;
// the mapping is unmapped by close(), when the last function is garbage-collected, or at
// environment teardown.
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "accessors.h"
#include "args.h"
#include "errors.h"
#include "module.h"

namespace vfio_bridge {
namespace {

/** class MappingState - one mapping shared by its accessor functions. */
class MappingState : public Resource {
 public:
  void Release() override {
    if (map_addr != nullptr) munmap(map_addr, map_len);
    map_addr = nullptr;
    base = nullptr;
  }

  // Offset in, value out (or in, for stores); shared with JavaScript as an ArrayBuffer.
  struct alignas(8) Scratch {
    uint64_t offset;
    uint64_t value;
  } scratch = {0, 0};
  uint8_t* base = nullptr;  // start of the caller's range; nullptr once closed
  uint64_t length = 0;
  void* map_addr = nullptr;  // page-aligned start actually mapped
  size_t map_len = 0;
  bool writable = false;
  int refs = 0;
  ErrorContext where;
};

std::string Hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

napi_value ThrowClosed(napi_env env, const char* op, MappingState* m) {
  return ThrowVfioError(env, op, 0, "the mapping is closed", m->where, "ECLOSED");
}

napi_value ThrowFault(napi_env env, const char* op, MappingState* m, uint64_t off) {
  return ThrowVfioError(env, op, 0, "bus error at offset " + Hex(off) + " of the mapping", m->where,
                        "SIGBUS");
}

[[gnu::noinline, gnu::cold]] void ThrowOutOfRange(napi_env env, MappingState* m, uint64_t off,
                                                  uint64_t width, const char* op) {
  ThrowRangeError(env, std::string(op) + ": offset " + std::to_string(off) + " width " +
                           std::to_string(width) + " is outside the mapping (length " +
                           std::to_string(m->length) + ")");
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
  if (m->writable) return true;
  ThrowTypeError(env, std::string(op) + ": the mapping is read-only");
  return false;
}

/**
 * The hot accessors take no arguments and return nothing: the offset and value travel through
 * the mapping's 16-byte scratch area, which JavaScript sees as an ArrayBuffer (see lib/vfio).
 * Converting arguments and results through N-API costs several calls per access; this costs one
 * (napi_get_cb_info, for the mapping pointer).
 */
inline MappingState* Self(napi_env env, napi_callback_info info) {
  void* data;
  napi_get_cb_info(env, info, nullptr, nullptr, nullptr, &data);
  return static_cast<MappingState*>(data);
}

using LoadFn = vfio_bridge_load (*)(const volatile void*);

template <unsigned W, LoadFn Load>
napi_value Read(napi_env env, napi_callback_info info, const char* op) {
  MappingState* m = Self(env, info);
  uint64_t off = m->scratch.offset;
  m->scratch.offset = 0;  // consumed: JavaScript writes only the low word for offsets < 2^32
  if (!CheckRange(env, m, off, W, op)) return nullptr;
  // SAFETY: CheckRange proved off + W <= length on an open mapping; Load is one W-byte mov.
  vfio_bridge_load r = Load(m->base + off);
  if (r.fault) return ThrowFault(env, op, m, off);
  m->scratch.value = r.value;
  return nullptr;
}

napi_value Read8(napi_env e, napi_callback_info i) {
  return Read<1, vfio_bridge_load8>(e, i, "mapping.read8");
}
napi_value Read16(napi_env e, napi_callback_info i) {
  return Read<2, vfio_bridge_load16>(e, i, "mapping.read16");
}
napi_value Read32(napi_env e, napi_callback_info i) {
  return Read<4, vfio_bridge_load32>(e, i, "mapping.read32");
}
napi_value Read64(napi_env e, napi_callback_info i) {
  return Read<8, vfio_bridge_load64>(e, i, "mapping.read64");
}

template <unsigned W>
napi_value Write(napi_env env, napi_callback_info info, const char* op) {
  MappingState* m = Self(env, info);
  uint64_t off = m->scratch.offset;
  m->scratch.offset = 0;  // consumed: JavaScript writes only the low word for offsets < 2^32
  if (!CheckRange(env, m, off, W, op) || !CheckWritable(env, m, op)) {
    return nullptr;
  }
  // Narrow stores use only the low word of the value; JavaScript checked its range, and the
  // check below keeps the native side honest for 1- and 2-byte stores.
  uint64_t v = W == 8 ? m->scratch.value : static_cast<uint32_t>(m->scratch.value);
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
  if (fault) return ThrowFault(env, op, m, off);
  return nullptr;
}

napi_value Write8(napi_env e, napi_callback_info i) { return Write<1>(e, i, "mapping.write8"); }
napi_value Write16(napi_env e, napi_callback_info i) { return Write<2>(e, i, "mapping.write16"); }
napi_value Write32(napi_env e, napi_callback_info i) { return Write<4>(e, i, "mapping.write32"); }
napi_value Write64(napi_env e, napi_callback_info i) { return Write<8>(e, i, "mapping.write64"); }

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
  napi_value buffer;
  size_t byte_offset = 0;
  napi_is_typedarray(env, array, &is_typed);
  if (!is_typed) {
    ThrowTypeError(env, std::string(op) + ": expected a TypedArray");
    return false;
  }
  napi_get_typedarray_info(env, array, &type, &n, &data, &buffer, &byte_offset);
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
  if (!GetSafeInteger(env, off_value, "offset", off) || !CheckRange(env, m, *off, 0, op)) {
    return false;
  }
  uint64_t total = *count * *width;
  if (total > m->length - *off) {
    ThrowRangeError(env, std::string(op) + ": offset " + std::to_string(*off) + " count " +
                             std::to_string(*count) + " width " + std::to_string(*width) +
                             " is outside the mapping (length " + std::to_string(m->length) + ")");
    return false;
  }
  *memory = static_cast<uint8_t*>(data);
  return true;
}

/** ReadBlock(off, count, width, into) - count loads of width bytes into the TypedArray. */
napi_value ReadBlock(napi_env env, napi_callback_info info) {
  const char* op = "mapping.readBlock";
  size_t argc = 4;
  napi_value argv[4];
  void* data;
  napi_get_cb_info(env, info, &argc, argv, nullptr, &data);
  auto* m = static_cast<MappingState*>(data);
  for (size_t i = argc; i < 4; i++) napi_get_undefined(env, &argv[i]);
  uint64_t off, count;
  uint32_t width;
  uint8_t* into;
  if (!GetBlock(env, m, argv[0], argv[1], argv[2], argv[3], false, op, &off, &count, &width,
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

/** WriteBlock(off, data, width) - one store of width bytes per element of data. */
napi_value WriteBlock(napi_env env, napi_callback_info info) {
  const char* op = "mapping.writeBlock";
  size_t argc = 3;
  napi_value argv[3];
  void* data;
  napi_get_cb_info(env, info, &argc, argv, nullptr, &data);
  auto* m = static_cast<MappingState*>(data);
  for (size_t i = argc; i < 3; i++) napi_get_undefined(env, &argv[i]);
  uint64_t off, count;
  uint32_t width;
  uint8_t* from;
  if (!GetBlock(env, m, argv[0], nullptr, argv[2], argv[1], true, op, &off, &count, &width,
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

/** Close() - unmap now; idempotent. Later accesses throw ECLOSED. */
napi_value Close(napi_env env, napi_callback_info info) {
  void* data;
  napi_get_cb_info(env, info, nullptr, nullptr, nullptr, &data);
  auto* m = static_cast<MappingState*>(data);
  if (m->map_addr != nullptr && munmap(m->map_addr, m->map_len) != 0) {
    int err = errno;
    m->map_addr = nullptr;
    m->base = nullptr;
    return ThrowVfioError(env, "munmap", err, "", m->where);
  }
  m->map_addr = nullptr;
  m->base = nullptr;
  return nullptr;
}

void FinalizeFunction(napi_env, void* data, void*) {
  auto* m = static_cast<MappingState*>(data);
  if (--m->refs == 0) ReleaseAndForget(m);
}

void FinalizeScratch(napi_env env, void*, void* hint) { FinalizeFunction(env, hint, nullptr); }

/**
 * Mmap(fd, offset, length, writable, path, bdf) - MAP_SHARED mapping of [offset, offset + length)
 * of @fd. The offset need not be page-aligned: the mapping starts at the page below it. Returns
 * an object of accessor functions bound to the mapping, and `scratch`: the 16-byte ArrayBuffer
 * through which the single accessors take the offset (uint64 at byte 0) and the value (uint64 at
 * byte 8).
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
  if (fd > INT32_MAX) return ThrowRangeError(env, "mmap: fd " + std::to_string(fd) + " is invalid");

  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t aligned = offset & ~(page - 1);
  uint64_t map_len = (offset - aligned) + length;  // both terms <= 2^53: no overflow
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* addr =
      mmap(nullptr, map_len, prot, MAP_SHARED, static_cast<int>(fd), static_cast<off_t>(aligned));
  if (addr == MAP_FAILED) {
    return ThrowVfioError(
        env, "mmap", errno,
        "fd " + std::to_string(fd) + " offset " + Hex(offset) + " length " + Hex(length), where);
  }

  auto* m = new MappingState();
  m->map_addr = addr;
  m->map_len = map_len;
  m->base = static_cast<uint8_t*>(addr) + (offset - aligned);
  m->length = length;
  m->writable = writable;
  m->where = std::move(where);
  ModuleData::Get(env)->Track(m);

  struct Entry {
    const char* name;
    napi_callback cb;
  };
  static const Entry kEntries[] = {
      {"read8", Read8},           {"read16", Read16},   {"read32", Read32},
      {"read64", Read64},         {"write8", Write8},   {"write16", Write16},
      {"write32", Write32},       {"write64", Write64}, {"readBlock", ReadBlock},
      {"writeBlock", WriteBlock}, {"close", Close},
  };
  napi_value ops;
  napi_create_object(env, &ops);
  for (const Entry& e : kEntries) {
    napi_value fn;
    if (napi_create_function(env, e.name, NAPI_AUTO_LENGTH, e.cb, m, &fn) != napi_ok) break;
    m->refs++;
    napi_add_finalizer(env, fn, m, FinalizeFunction, nullptr, nullptr);
    napi_set_named_property(env, ops, e.name, fn);
  }
  if (m->refs == 0) {  // nothing can reach the mapping: free it now
    ReleaseAndForget(m);
    return nullptr;
  }
  // The scratch area lives inside the MappingState, which the ArrayBuffer keeps alive through
  // the shared reference count, so the memory stays valid for as long as JavaScript can see it.
  napi_value scratch;
  if (napi_create_external_arraybuffer(env, &m->scratch, sizeof m->scratch, FinalizeScratch, m,
                                       &scratch) != napi_ok) {
    return nullptr;
  }
  m->refs++;
  napi_set_named_property(env, ops, "scratch", scratch);
  return ops;
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
  if (fd < 0) return ThrowVfioError(env, "memfd_create", errno, name, ErrorContext{});
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    return ThrowVfioError(env, "ftruncate", err, name, ErrorContext{});
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

}  // namespace

void RegisterMapping(Napi::Env env, Napi::Object exports) {
  napi_property_descriptor props[] = {
      {"mmap", nullptr, Mmap, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
      {"memfd", nullptr, Memfd, nullptr, nullptr, nullptr, napi_enumerable, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}

}  // namespace vfio_bridge
