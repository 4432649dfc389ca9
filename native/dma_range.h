// The memory side of a DMA map request, shared by the two IOMMU backends (type1's
// VFIO_IOMMU_MAP_DMA in dma.cc, iommufd's IOMMU_IOAS_MAP in ioas_dma.cc): the JavaScript arguments
// (memory handle, offset, iova, size, read, write) checked and resolved to the host range, so no
// raw address crosses into JavaScript and both backends refuse the same bad input the same way.
#pragma once

#include <errno.h>
#include <node_api.h>

#include <cstdint>
#include <string>

#include "args.h"
#include "errors.h"
#include "host_memory.h"

namespace vfio_bridge {

/** struct DmaRange - a checked map request: host address, IOVA, length and the device's rights. */
struct DmaRange {
  uint64_t vaddr = 0;
  uint64_t iova = 0;
  uint64_t size = 0;
  bool read = false;
  bool write = false;
};

/**
 * ParseDmaRange - @argv[0..5] are (memory, offset, iova, size, read, write) for @op. Fills @out,
 * or throws (TypeError, RangeError, VfioError ECLOSED/EACCES) and returns false.
 */
inline bool ParseDmaRange(napi_env env, const char* op, const napi_value* argv, DmaRange* out) {
  HostRange range;
  if (!MappingHostRange(env, argv[0], &range) && !GuestMemoryHostRange(env, argv[0], &range)) {
    ThrowTypeError(env, std::string(op) + " expects a mapping or guest memory handle");
    return false;
  }
  uint64_t offset, iova, size;
  bool read = false, write = false;
  if (!GetSafeInteger(env, argv[1], "offset", &offset) ||
      !GetSafeInteger(env, argv[2], "iova", &iova) ||
      !GetSafeInteger(env, argv[3], "size", &size)) {
    return false;
  }
  if (napi_get_value_bool(env, argv[4], &read) != napi_ok ||
      napi_get_value_bool(env, argv[5], &write) != napi_ok) {
    ThrowTypeError(env, "read and write must be booleans");
    return false;
  }
  if (range.base == nullptr) {
    ThrowVfioError(env, op, 0, "the memory is closed", *range.where, "ECLOSED");
    return false;
  }
  // offset is tested first, so offset + size is never formed.
  if (offset > range.length || size > range.length - offset) {
    ThrowRangeError(env, std::string(op) + ": offset " + std::to_string(offset) + " size " +
                             std::to_string(size) + " is outside the memory (length " +
                             std::to_string(range.length) + ")");
    return false;
  }
  if (write && !range.writable) {
    ThrowVfioError(env, op, EACCES, "device writes need writable memory", *range.where);
    return false;
  }
  // SAFETY: offset + size <= length was checked above, so the range lies inside the live mapping.
  out->vaddr = reinterpret_cast<uint64_t>(range.base + offset);
  out->iova = iova;
  out->size = size;
  out->read = read;
  out->write = write;
  return true;
}

}  // namespace vfio_bridge
