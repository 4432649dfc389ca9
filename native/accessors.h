// The fixed-width accessors implemented in accessors_x86_64.S. Each single accessor is exactly one
// load or store of its width; a SIGBUS on that instruction returns fault != 0 instead of killing
// the process (see fault_guard.cc).
#pragma once

#include <stddef.h>
#include <stdint.h>

// Protected visibility: exported (so the disassembly test finds them even in a stripped prebuild)
// yet bound locally, so calls go straight to them rather than through the PLT.
#define VFIO_BRIDGE_ACCESSOR __attribute__((visibility("protected")))

extern "C" {

/** struct vfio_bridge_load - a loaded value, or fault != 0 when the access raised SIGBUS. */
struct vfio_bridge_load {
  uint64_t value;
  uint64_t fault;
};

VFIO_BRIDGE_ACCESSOR vfio_bridge_load vfio_bridge_load8(const volatile void* p);
VFIO_BRIDGE_ACCESSOR vfio_bridge_load vfio_bridge_load16(const volatile void* p);
VFIO_BRIDGE_ACCESSOR vfio_bridge_load vfio_bridge_load32(const volatile void* p);
VFIO_BRIDGE_ACCESSOR vfio_bridge_load vfio_bridge_load64(const volatile void* p);

/* Stores return 0, or 1 after a fault. */
VFIO_BRIDGE_ACCESSOR int vfio_bridge_store8(volatile void* p, uint8_t v);
VFIO_BRIDGE_ACCESSOR int vfio_bridge_store16(volatile void* p, uint16_t v);
VFIO_BRIDGE_ACCESSOR int vfio_bridge_store32(volatile void* p, uint32_t v);
VFIO_BRIDGE_ACCESSOR int vfio_bridge_store64(volatile void* p, uint64_t v);

/* Block loops: one access of the width per element; return the elements left undone (0 = all). */
VFIO_BRIDGE_ACCESSOR size_t vfio_bridge_read_block8(void* dst, const volatile void* src,
                                                    size_t count);
VFIO_BRIDGE_ACCESSOR size_t vfio_bridge_read_block16(void* dst, const volatile void* src,
                                                     size_t count);
VFIO_BRIDGE_ACCESSOR size_t vfio_bridge_read_block32(void* dst, const volatile void* src,
                                                     size_t count);
VFIO_BRIDGE_ACCESSOR size_t vfio_bridge_read_block64(void* dst, const volatile void* src,
                                                     size_t count);
VFIO_BRIDGE_ACCESSOR size_t vfio_bridge_write_block8(volatile void* dst, const void* src,
                                                     size_t count);
VFIO_BRIDGE_ACCESSOR size_t vfio_bridge_write_block16(volatile void* dst, const void* src,
                                                      size_t count);
VFIO_BRIDGE_ACCESSOR size_t vfio_bridge_write_block32(volatile void* dst, const void* src,
                                                      size_t count);
VFIO_BRIDGE_ACCESSOR size_t vfio_bridge_write_block64(volatile void* dst, const void* src,
                                                      size_t count);
}
