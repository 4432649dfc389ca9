import { ArgRangeError, ArgTypeError, closedError } from '../base/error';
import { hex } from '../base/values';
import { native, type NativeHandle } from '../native';
import {
  DMA_HANDLE,
  DmaState,
  iovaRangesOf,
  minPageSize,
  type DmaLimits,
  type DmaMapping,
  type DmaMapRequest,
} from './dma';
import { type1Hint } from './dma-hints';
import type { DmaBackend } from './dma-types';
import { VfioError } from '../base/native-errors';
import {
  parseIommuInfo,
  VFIO_API_VERSION,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  type IommuInfo,
  type IovaRange,
} from './uapi';

/** {@link Container.iommuInfo}: the raw info and what a VMM reads from it. */
export interface ContainerIommuInfo extends IommuInfo {
  /** Every IOMMU page size the kernel supports, ascending. */
  pageSizes: number[];
  /** The smallest of them: the granularity of every DMA mapping. */
  minPageSize: number;
  /** The IOVA ranges (inclusive ends) a mapping must lie in (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE). */
  iovaRanges: IovaRange[];
  /** DMA entries left (VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL), or undefined when the kernel does not say. */
  dmaAvail: number | undefined;
  /** The migration capability is present (reported only; vfio-bridge does not use it). */
  migration: boolean;
  /** Dirty page tracking is available (it comes with the migration capability). */
  dirtyTracking: boolean;
}

/** The IOMMU models vfio-bridge drives, best first. */
export type IommuType = 'Type1v2' | 'Type1';

const IOMMU_TYPES: ReadonlyArray<[IommuType, number]> = [
  ['Type1v2', VFIO_TYPE1v2_IOMMU],
  ['Type1', VFIO_TYPE1_IOMMU],
];

const handles = new WeakMap<Container, NativeHandle>();

/** The container's native handle, for Group.setContainer. @internal */
export function containerHandle(c: Container): NativeHandle {
  const h = handles.get(c);
  if (h === undefined || c.closed)
    throw closedError('VFIO_GROUP_SET_CONTAINER', 'the container', { path: c.path });
  return h;
}

/**
 * A VFIO container (`/dev/vfio/vfio`, the legacy container/group uAPI): the IOMMU context that
 * groups attach to. Close it with {@link Container.close} or `using`; it is also released when
 * garbage-collected or when its thread exits.
 */
export class Container implements DmaBackend, Disposable {
  /** The backend: the container/group uAPI with a type1 IOMMU. */
  readonly kind = 'type1' as const;
  /** The VFIO API version reported by the kernel (always VFIO_API_VERSION, 0). */
  readonly apiVersion: number;
  /** The device node this container was opened from. */
  readonly path: string;
  #closed = false;
  #groups = 0;
  #iommu: IommuType | null = null;
  #info: IommuInfo | null = null;
  #limitsCache: DmaLimits | null = null;
  readonly #dma: DmaState;

  private constructor(handle: NativeHandle, path: string, apiVersion: number) {
    handles.set(this, handle);
    this.path = path;
    this.apiVersion = apiVersion;
    const dmaAvail = (): number | undefined => {
      try {
        return this.iommuInfo().dmaAvail;
      } catch {
        return undefined;
      }
    };
    this.#dma = new DmaState({
      path,
      noun: 'container',
      mapOp: 'VFIO_IOMMU_MAP_DMA',
      unmapOp: 'VFIO_IOMMU_UNMAP_DMA',
      limits: () => this.#limits(),
      notReady: {
        message: 'the container has no IOMMU type set',
        hint: 'attach a group (group.setContainer) and call container.setIommu() first',
      },
      kernelHint: (f) => type1Hint(f, dmaAvail),
      map: (m) => native.vfioMapDma(...this.#mapArgs(m)),
      mapAsync: (m) => native.vfioMapDmaAsync(...this.#mapArgs(m)),
      unmap: (iova, size) => native.vfioUnmapDma(this.#handle('VFIO_IOMMU_UNMAP_DMA'), iova, size),
    });
  }

  /** The addon's MAP_DMA arguments for mapping `m`, synchronous or not. */
  #mapArgs(m: DmaMapping): Parameters<typeof native.vfioMapDma> {
    return [
      this.#handle('VFIO_IOMMU_MAP_DMA'),
      m.memory[DMA_HANDLE](),
      m.offset,
      m.iova,
      m.size,
      m.read,
      m.write,
    ];
  }

  /**
   * Open a container and check its API version.
   * @throws VfioError (ENOENT: VFIO not loaded; EACCES/EPERM: permissions; EVERSION)
   */
  static open(path = '/dev/vfio/vfio'): Container {
    if (typeof path !== 'string') throw new ArgTypeError('Container.open: path must be a string');
    const h = native.openFd(path);
    try {
      const version = native.vfioGetApiVersion(h);
      if (version !== VFIO_API_VERSION) {
        throw new VfioError({
          message: `${path} speaks VFIO API version ${version}, vfio-bridge needs ${VFIO_API_VERSION}`,
          code: 'EVERSION',
          op: 'VFIO_GET_API_VERSION',
          path,
        });
      }
      return new Container(h, path, version);
    } catch (e) {
      native.closeFd(h);
      throw e;
    }
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The container fd (-1 once closed). */
  get fd(): number {
    return this.#closed ? -1 : native.fdOf(handles.get(this)!);
  }

  /** The IOMMU type set by {@link Container.setIommu}, or null. */
  get iommuType(): IommuType | null {
    return this.#iommu;
  }

  /** The IOMMU types the kernel supports for this container, best first. */
  supportedIommuTypes(): IommuType[] {
    const h = this.#handle('VFIO_CHECK_EXTENSION');
    return IOMMU_TYPES.filter(([, ext]) => native.vfioCheckExtension(h, ext) > 0).map(([name]) => name);
  }

  /**
   * Select the IOMMU model. A group must be attached first (Group.setContainer). Default: the
   * best supported type.
   * @throws VfioError ENOGROUP (no group attached), EINVAL (already set), ENOIOMMU (nothing supported),
   * or the kernel's
   */
  setIommu(type?: IommuType): void {
    const h = this.#handle('VFIO_SET_IOMMU');
    if (type !== undefined && !IOMMU_TYPES.some(([name]) => name === type)) {
      throw new ArgRangeError(`setIommu: unknown IOMMU type ${JSON.stringify(type)} (Type1v2 or Type1)`);
    }
    if (this.#groups === 0) {
      throw new VfioError({
        message: 'VFIO_SET_IOMMU needs a group in the container',
        code: 'ENOGROUP',
        op: 'VFIO_SET_IOMMU',
        path: this.path,
        hint: 'call group.setContainer(container) first',
      });
    }
    if (this.#iommu !== null) {
      // The kernel answers a second VFIO_SET_IOMMU with a bare EINVAL; the state is known here.
      throw new VfioError({
        message: `VFIO_SET_IOMMU: the container's IOMMU is already set (${this.#iommu})`,
        code: 'EINVAL',
        errno: 22,
        op: 'VFIO_SET_IOMMU',
        path: this.path,
        hint:
          'an IOMMU type is set once per container and stays for its lifetime: attach further groups ' +
          'with group.setContainer(container) and use it as it is, or open a new Container for another type',
      });
    }
    const chosen = type ?? this.supportedIommuTypes()[0];
    if (chosen === undefined) {
      throw new VfioError({
        message: 'the container supports neither the Type1v2 nor the Type1 IOMMU',
        code: 'ENOIOMMU',
        op: 'VFIO_CHECK_EXTENSION',
        path: this.path,
        hint: 'vfio-bridge needs an x86 IOMMU with vfio_iommu_type1 (modprobe vfio_iommu_type1)',
      });
    }
    native.vfioSetIommu(h, IOMMU_TYPES.find(([name]) => name === chosen)![1]);
    this.#iommu = chosen;
  }

  /**
   * VFIO_IOMMU_GET_INFO: page sizes, IOVA ranges, DMA entries left, and whether the migration and
   * dirty-tracking capabilities exist, with the raw capability chain in `caps`.
   */
  iommuInfo(): ContainerIommuInfo {
    const info = parseIommuInfo(native.vfioIommuInfo(this.#handle('VFIO_IOMMU_GET_INFO')));
    const pageSizes: number[] = [];
    for (let bit = 0n; bit < 64n; bit++) {
      if (info.iovaPgsizes & (1n << bit)) pageSizes.push(Number(1n << bit));
    }
    const avail = info.caps.find((c) => c.kind === 'dma-avail');
    const migration = info.caps.some((c) => c.kind === 'migration');
    return {
      ...info,
      pageSizes,
      minPageSize: minPageSize(info.iovaPgsizes),
      iovaRanges: iovaRangesOf(info),
      dmaAvail: avail?.kind === 'dma-avail' ? avail.avail : undefined,
      migration,
      dirtyTracking: migration,
    };
  }

  // Page sizes and IOVA ranges do not change once the IOMMU type is set: ask the kernel once.
  #limits(): DmaLimits | null {
    if (this.#iommu === null) return null;
    if (this.#info === null) {
      const info = parseIommuInfo(native.vfioIommuInfo(this.#handle('VFIO_IOMMU_GET_INFO')));
      this.#info = info;
      this.#limitsCache = {
        pageSize: minPageSize(info.iovaPgsizes),
        pageSizeSource: `iova_pgsizes is ${hex(info.iovaPgsizes)}`,
        iovaRanges: iovaRangesOf(info),
      };
    }
    return this.#limitsCache;
  }

  /**
   * Map `size` bytes of `memory` (guest RAM or a Mapping) from `offset` at `iova` for device DMA
   * (VFIO_IOMMU_MAP_DMA). Refused before the ioctl, each with a VfioError naming the numbers: a
   * closed container (`ECLOSED`), no IOMMU type set (`ENOIOMMU`), size 0 (`EZEROSIZE`), an iova,
   * size or offset not aligned to the IOMMU page size (`EALIGN`), a range outside every IOVA range
   * (`EIOVARANGE`), an overlap with a recorded mapping (`EOVERLAP`). Kernel failures keep their
   * errno; ENOMEM and ENOSPC carry hints (RLIMIT_MEMLOCK, dma_avail and dma_entry_limit).
   */
  mapDma(req: DmaMapRequest): void {
    this.#handle('VFIO_IOMMU_MAP_DMA');
    this.#dma.map(req);
  }

  /**
   * {@link mapDma} with the ioctl on the libuv thread pool, so pinning a large guest RAM does not
   * hold the event loop. Checked (and refused) at once, as mapDma; recorded once the kernel
   * accepted it; rejects with the same VfioError.
   */
  async mapDmaAsync(req: DmaMapRequest): Promise<void> {
    this.#handle('VFIO_IOMMU_MAP_DMA');
    await this.#dma.mapAsync(req);
  }

  /**
   * Unmap [iova, iova + size), which must be exactly one or more whole recorded mappings with no
   * gap (`ENOTMAPPED` otherwise, before the ioctl). Returns the bytes the kernel unmapped.
   */
  unmapDma(iova: number, size: number): number {
    this.#handle('VFIO_IOMMU_UNMAP_DMA');
    return this.#dma.unmap(iova, size);
  }

  /** Every DMA mapping this container made and has not unmapped, in IOVA order. */
  dmaMappings(): DmaMapping[] {
    return this.#dma.list();
  }

  /** Bytes currently mapped for DMA by this container. */
  get dmaMappedBytes(): number {
    return this.#dma.mappedBytes;
  }

  /** Bookkeeping from Group: how many groups are attached. @internal */
  _groupAttached(delta: 1 | -1): void {
    this.#groups += delta;
    if (this.#groups === 0 && this.#iommu !== null) {
      // The kernel releases the IOMMU, and every DMA mapping with it, when the last group leaves.
      this.#dma.forget();
      this.#iommu = null;
      this.#info = null;
      this.#limitsCache = null;
    }
  }

  /**
   * Close the container, after unmapping every DMA mapping it made. Idempotent; later use throws
   * VfioError `'ECLOSED'`. The fd is closed even if an unmap fails; that failure is then thrown.
   */
  close(): void {
    if (this.#closed) return;
    try {
      if (this.#iommu !== null) this.#dma.unmapAll();
    } finally {
      this.#closed = true;
      const h = handles.get(this);
      if (h !== undefined) native.closeFd(h);
    }
  }

  /** Same as {@link Container.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #handle(op: string): NativeHandle {
    if (this.#closed) throw closedError(op, 'the container', { path: this.path });
    return handles.get(this)!;
  }
}
