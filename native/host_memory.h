// Host memory the IOMMU can be given: a Mapping (a device region, a memfd, a file) or guest RAM.
// DMA mapping (dma.cc) and, later, KVM memory slots resolve an opaque JavaScript handle to the
// host virtual range behind it through these functions.
#pragma once

#include <node_api.h>

#include <cstdint>

#include "errors.h"

namespace vfio_bridge {

/** struct HostRange - a live host virtual range; @base is nullptr once its owner was closed. */
struct HostRange {
  uint8_t* base = nullptr;
  uint64_t length = 0;
  bool writable = false;
  const ErrorContext* where = nullptr;
};

/** MappingHostRange - fill @out if @value is a mapping handle; false (no throw) if it is not. */
bool MappingHostRange(napi_env env, napi_value value, HostRange* out);

/** GuestMemoryHostRange - fill @out if @value is a guest-memory handle; false (no throw) if not. */
bool GuestMemoryHostRange(napi_env env, napi_value value, HostRange* out);

void RegisterGuestMemory(napi_env env, napi_value exports);
void RegisterDma(napi_env env, napi_value exports);

}  // namespace vfio_bridge
