// Host memory the IOMMU and KVM can be given: a Mapping (a device region, a memfd, a file) or guest
// RAM. DMA mapping (dma.cc), KVM memory slots (kvm.cc) and the vCPU threads' exit table resolve an
// opaque JavaScript handle to the host virtual range behind it through these functions; the last
// two pin the pages (MapBacking) for as long as they use them.
#pragma once

#include <node_api.h>

#include <atomic>
#include <cstddef>
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

/**
 * struct MapBacking - the pages of one mmap. A Mapping holds one reference; a thread that accesses
 * the pages without the JavaScript object (a vCPU's exit table) holds another, so closing the
 * Mapping while such a thread may still use it never unmaps pages under it.
 */
struct MapBacking {
  void* addr;
  size_t len;
  std::atomic<uint32_t> refs;
};

/**
 * MappingPin - as MappingHostRange, and take a reference on the mapping's pages (@pin is nullptr
 * when the mapping is closed). Release it with MapUnpin.
 */
bool MappingPin(napi_env env, napi_value value, HostRange* out, MapBacking** pin);

/** MapUnpin - drop a reference; the last one unmaps. Returns munmap's errno, or 0. */
int MapUnpin(MapBacking* pin);

/** MappingHostRange - fill @out if @value is a mapping handle; false (no throw) if it is not. */
bool MappingHostRange(napi_env env, napi_value value, HostRange* out);

/** GuestMemoryHostRange - fill @out if @value is a guest-memory handle; false (no throw) if not. */
bool GuestMemoryHostRange(napi_env env, napi_value value, HostRange* out);

/** GuestMemoryPin - as MappingPin, for guest memory. */
bool GuestMemoryPin(napi_env env, napi_value value, HostRange* out, MapBacking** pin);

/** MemoryPin - MappingPin or GuestMemoryPin, whichever @value is; false (no throw) if neither. */
bool MemoryPin(napi_env env, napi_value value, HostRange* out, MapBacking** pin);

void RegisterGuestMemory(napi_env env, napi_value exports);
void RegisterDma(napi_env env, napi_value exports);

}  // namespace vfio_bridge
