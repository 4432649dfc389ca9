// iommufd DMA mapping: IOMMU_IOAS_MAP (always at a fixed IOVA: the caller's record decides where)
// and IOMMU_IOAS_UNMAP on an IOAS of an iommufd. The memory is resolved as for type1 (dma_range.h);
// validation and the record of what is mapped live in lib/vfio, shared with the type1 backend.
#include "args.h"
#include "async_call.h"
#include "dma_range.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"
#include "iommufd_uapi.h"
#include "module.h"

namespace vfio_bridge {
namespace {

using namespace uapi;

constexpr const char* kMapOp = "IOMMU_IOAS_MAP";

/**
 * ParseMap - the arguments of IoasMap and IoasMapAsync (iommufd, ioas, memory, offset, iova, size,
 * read, write), checked, as the map request; nullptr after throwing.
 */
FdResource* ParseMap(napi_env env, const Args<8>& args, IommuIoasMap* map) {
  FdResource* h = GetHandle(env, args[0], kMapOp);
  uint32_t ioas;
  DmaRange range;
  if (h == nullptr || !GetUint32(env, args[1], "ioas", &ioas) ||
      !ParseDmaRange(env, kMapOp, &args.argv[2], &range)) {
    return nullptr;
  }
  *map = {};
  map->size = sizeof *map;
  map->flags = kIoasMapFixedIova | (range.read ? kIoasMapReadable : 0) |
               (range.write ? kIoasMapWriteable : 0);
  map->ioas_id = ioas;
  map->user_va = range.vaddr;
  map->length = range.size;
  map->iova = range.iova;
  return h;
}

/**
 * IoasMap(iommufd, ioas, memory, offset, iova, size, read, write) - map [offset, offset + size) of
 * @memory at exactly @iova in IOAS @ioas. Returns nothing; throws the kernel's errno.
 */
napi_value IoasMap(napi_env env, napi_callback_info info) {
  Args<8> args(env, info);
  IommuIoasMap map;
  FdResource* h = ParseMap(env, args, &map);
  if (h == nullptr) return nullptr;
  int r = Ioctl(h->fd, kIommuIoasMap, &map);
  if (r < 0) return ThrowErrno(env, kMapOp, h, -r);
  return nullptr;
}

/**
 * IoasMapAsync(...) - IoasMap on the thread pool; arguments are checked (and thrown) at once. The
 * call works on its own dup of the iommufd and holds the iommufd and memory handles until it
 * completes, as MapDmaAsync does for type1.
 */
napi_value IoasMapAsync(napi_env env, napi_callback_info info) {
  Args<8> args(env, info);
  IommuIoasMap map;
  FdResource* h = ParseMap(env, args, &map);
  if (h == nullptr) return nullptr;
  auto* call = new StructIoctlCall<IommuIoasMap>(kMapOp, h, kIommuIoasMap, map);
  if (!call->Prepare(env, h, args[0], args[2])) return Abandon(env, call);
  return Queue(env, call);
}

/** IoasUnmap(iommufd, ioas, iova, size) - returns the number of bytes the kernel unmapped. */
napi_value IoasUnmap(napi_env env, napi_callback_info info) {
  const char* op = "IOMMU_IOAS_UNMAP";
  Args<4> args(env, info);
  FdResource* h = GetHandle(env, args[0], op);
  uint32_t ioas;
  uint64_t iova, size;
  if (h == nullptr || !GetUint32(env, args[1], "ioas", &ioas) ||
      !GetSafeInteger(env, args[2], "iova", &iova) ||
      !GetSafeInteger(env, args[3], "size", &size)) {
    return nullptr;
  }
  IommuIoasUnmap unmap = {};
  unmap.size = sizeof unmap;
  unmap.ioas_id = ioas;
  unmap.iova = iova;
  unmap.length = size;
  int r = Ioctl(h->fd, kIommuIoasUnmap, &unmap);
  if (r < 0) return ThrowErrno(env, op, h, -r);
  napi_value out;
  napi_create_double(env, static_cast<double>(unmap.length), &out);
  return out;
}

}  // namespace

void RegisterIoasDma(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("iommufdIoasMap", IoasMap),
      Method("iommufdIoasMapAsync", IoasMapAsync),
      Method("iommufdIoasUnmap", IoasUnmap),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
