// Type1 IOMMU DMA mapping: VFIO_IOMMU_MAP_DMA and VFIO_IOMMU_UNMAP_DMA on a container. The memory
// is named by a handle (a Mapping or guest memory) and resolved to its host range here, so no raw
// address crosses into JavaScript on this path. Validation and bookkeeping live in lib/vfio.
#include <linux/vfio.h>
#include <unistd.h>

#include "args.h"
#include "async_call.h"
#include "dma_range.h"
#include "exports.h"
#include "handle.h"
#include "host_memory.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

/**
 * ParseMap - the arguments of MapDma and MapDmaAsync (container, memory, offset, iova, size, read,
 * write), checked, as the map request; nullptr after throwing.
 */
FdResource* ParseMap(napi_env env, const Args<7>& args, vfio_iommu_type1_dma_map* map) {
  const char* op = "VFIO_IOMMU_MAP_DMA";
  FdResource* h = GetHandle(env, args[0], op);
  DmaRange range;
  if (h == nullptr || !ParseDmaRange(env, op, &args.argv[1], &range)) return nullptr;
  *map = {};
  map->argsz = sizeof *map;
  map->flags =
      (range.read ? VFIO_DMA_MAP_FLAG_READ : 0) | (range.write ? VFIO_DMA_MAP_FLAG_WRITE : 0);
  map->vaddr = range.vaddr;
  map->iova = range.iova;
  map->size = range.size;
  return h;
}

/**
 * MapDma(container, memory, offset, iova, size, read, write) - map [offset, offset + size) of
 * @memory at @iova for device reads and/or writes. Returns nothing; throws the kernel's errno.
 */
napi_value MapDma(napi_env env, napi_callback_info info) {
  const char* op = "VFIO_IOMMU_MAP_DMA";
  Args<7> args(env, info);
  vfio_iommu_type1_dma_map map;
  FdResource* h = ParseMap(env, args, &map);
  if (h == nullptr) return nullptr;
  int r = Ioctl(h->fd, VFIO_IOMMU_MAP_DMA, &map);
  if (r < 0) return ThrowErrno(env, op, h, -r);
  return nullptr;
}

/** UnmapDma(container, iova, size) - returns the number of bytes the kernel unmapped. */
napi_value UnmapDma(napi_env env, napi_callback_info info) {
  const char* op = "VFIO_IOMMU_UNMAP_DMA";
  Args<3> args(env, info);
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr) return nullptr;
  uint64_t iova, size;
  if (!GetSafeInteger(env, args[1], "iova", &iova) ||
      !GetSafeInteger(env, args[2], "size", &size)) {
    return nullptr;
  }
  vfio_iommu_type1_dma_unmap unmap = {};
  unmap.argsz = sizeof unmap;
  unmap.iova = iova;
  unmap.size = size;
  int r = Ioctl(h->fd, VFIO_IOMMU_UNMAP_DMA, &unmap);
  if (r < 0) return ThrowErrno(env, op, h, -r);
  napi_value out;
  napi_create_double(env, static_cast<double>(unmap.size), &out);
  return out;
}

/**
 * MapDmaAsync(container, memory, offset, iova, size, read, write) - MapDma on the thread pool;
 * returns a promise. Arguments are checked (and thrown) as MapDma checks them. The call works on
 * its own dup of the container fd (closing the container meanwhile cannot hand the ioctl another
 * file) and holds the container and memory handles until it completes; their owner (lib/vfio) does
 * not unmap memory with a map in flight.
 */
napi_value MapDmaAsync(napi_env env, napi_callback_info info) {
  Args<7> args(env, info);
  vfio_iommu_type1_dma_map map;
  FdResource* h = ParseMap(env, args, &map);
  if (h == nullptr) return nullptr;
  auto* call = new StructIoctlCall<vfio_iommu_type1_dma_map>("VFIO_IOMMU_MAP_DMA", h,
                                                             VFIO_IOMMU_MAP_DMA, map);
  if (!call->Prepare(env, h, args[0], args[1])) return Abandon(env, call);
  return Queue(env, call);
}

}  // namespace

void RegisterDma(napi_env env, napi_value exports) {
  const napi_property_descriptor methods[] = {
      Method("vfioMapDma", MapDma),
      Method("vfioMapDmaAsync", MapDmaAsync),
      Method("vfioUnmapDma", UnmapDma),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
