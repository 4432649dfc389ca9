// The fixed-width accessors implemented in accessors_x86_64.S. Each single accessor is exactly one
// load or store of its width; a SIGBUS on that instruction returns fault != 0 instead of killing
// the process (see fault_guard.cc).
#pragma once

#include <stddef.h>
#include <stdint.h>

extern "C" {

/** struct vfio_bridge_load - a loaded value, or fault != 0 when the access raised SIGBUS. */
struct vfio_bridge_load {
  uint64_t value;
  uint64_t fault;
};

vfio_bridge_load vfio_bridge_load8(const volatile void* p);
vfio_bridge_load vfio_bridge_load16(const volatile void* p);
vfio_bridge_load vfio_bridge_load32(const volatile void* p);
vfio_bridge_load vfio_bridge_load64(const volatile void* p);

/* Stores return 0, or 1 after a fault. */
int vfio_bridge_store8(volatile void* p, uint8_t v);
int vfio_bridge_store16(volatile void* p, uint16_t v);
int vfio_bridge_store32(volatile void* p, uint32_t v);
int vfio_bridge_store64(volatile void* p, uint64_t v);

/* Block loops: one access of the width per element; return the elements left undone (0 = all). */
size_t vfio_bridge_read_block8(void* dst, const volatile void* src, size_t count);
size_t vfio_bridge_read_block16(void* dst, const volatile void* src, size_t count);
size_t vfio_bridge_read_block32(void* dst, const volatile void* src, size_t count);
size_t vfio_bridge_read_block64(void* dst, const volatile void* src, size_t count);
size_t vfio_bridge_write_block8(volatile void* dst, const void* src, size_t count);
size_t vfio_bridge_write_block16(volatile void* dst, const void* src, size_t count);
size_t vfio_bridge_write_block32(volatile void* dst, const void* src, size_t count);
size_t vfio_bridge_write_block64(volatile void* dst, const void* src, size_t count);
}
