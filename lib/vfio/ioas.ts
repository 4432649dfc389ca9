/**
 * An iommufd IO address space (IOAS): where device DMA is mapped on the iommufd backend, with the
 * same exact record and the same checks as a type1 Container (dma.ts), and the devices attached to
 * it, each through the page table (HWPT) the kernel made for it or one allocated here (Hwpt).
 */
import { ArgTypeError, closedError } from '../base/error';
import { VfioError } from '../base/native-errors';
import { native } from '../native';
import { hex } from '../base/values';
import { DMA_HANDLE, DmaState, type DmaLimits, type DmaMapping, type DmaMapRequest } from './dma';
import { iommufdHint } from './dma-hints';
import type { DmaBackend, DmaIommuInfo } from './dma-types';
import type { Device } from './device';
import { iommufdHandle, type IommufdHandle } from './iommufd-handle';
import { IOMMU_HWPT_ALLOC_DIRTY_TRACKING, parseIovaRanges, type IoasIovaRanges } from './iommufd-uapi';
import { isMdevUuid } from './mdev/sysfs';

/** The host's page: pinning is per page, so no mapping is finer than one (memfd and mmap are page-aligned). */
const HOST_PAGE = 4096;

/** {@link Ioas.iommuInfo}: the IOAS's limits, as the type1 container reports its own. */
export interface IoasIommuInfo extends DmaIommuInfo {
  /** out_iova_alignment: the attached page tables' smallest page (1 while nothing is attached). */
  readonly iovaAlignment: number;
}

/** Options of {@link Ioas.allocHwpt}. */
export interface HwptOptions {
  /** Enforce IOMMU dirty tracking on the devices attached to it (IOMMU_HWPT_ALLOC_DIRTY_TRACKING). */
  dirtyTracking?: boolean;
}

/** A device attached here, and the page table (HWPT) it is attached through. */
interface Attached {
  readonly device: Device;
  readonly hwpt: number;
}

/**
 * An IO address space of an {@link Iommufd}, from {@link Iommufd.allocIoas}. Map guest RAM and BARs
 * with {@link mapDma} (always at the IOVA asked for), attach bound device cdevs with {@link attach}.
 * Its IOVA ranges narrow as devices attach (their reserved regions, such as the MSI window) and
 * widen as they leave; the record re-reads them after each attach and detach made here.
 *
 * `F` is the type of its {@link iommufd}: `Iommufd` for an IOAS from `allocIoas()`, which is where
 * every IOAS comes from; where an IOAS is only known as `Ioas`, it is the {@link IommufdHandle}
 * every Iommufd is.
 */
export class Ioas<F extends IommufdHandle = IommufdHandle> implements DmaBackend, Disposable {
  /** The backend: iommufd. */
  readonly kind = 'iommufd' as const;
  /** The IOAS's ID in its iommufd. */
  readonly id: number;
  /**
   * The {@link Iommufd} this IOAS was allocated in. Bind more device cdevs to it
   * (`openCdevDevice(bdf, ioas.iommufd)`), ask it about the IOMMU behind a device (`hwInfo`), or
   * close it (which closes this IOAS too). Typed `Iommufd` on an IOAS from `allocIoas()`, so
   * `ioas.iommufd.allocIoas()` gives a second IOAS beside this one; on a plain `Ioas`,
   * `instanceof Iommufd` narrows it back.
   */
  readonly iommufd: F;
  #closed = false;
  #ranges: IoasIovaRanges | null = null;
  readonly #dma: DmaState;
  readonly #attached = new Map<Device, Attached>();

  private constructor(iommufd: F, id: number) {
    this.iommufd = iommufd;
    this.id = id;
    const noun = `IOAS ${id}`;
    this.#dma = new DmaState({
      path: iommufd.path,
      noun,
      mapOp: 'IOMMU_IOAS_MAP',
      unmapOp: 'IOMMU_IOAS_UNMAP',
      limits: () => this.#limits(),
      notReady: { message: `${noun} cannot map`, hint: 'allocate a new IOAS' },
      kernelHint: (f) => iommufdHint(f, noun),
      map: (m) => native.iommufdIoasMap(...this.#mapArgs(m)),
      mapAsync: (m) => native.iommufdIoasMapAsync(...this.#mapArgs(m)),
      unmap: (iova, size) => native.iommufdIoasUnmap(this.#handle('IOMMU_IOAS_UNMAP'), this.id, iova, size),
    });
  }

  /** Made by Iommufd.allocIoas. @internal */
  static _create<F extends IommufdHandle>(iommufd: F, id: number): Ioas<F> {
    return new Ioas(iommufd, id);
  }

  #mapArgs(m: DmaMapping): Parameters<typeof native.iommufdIoasMap> {
    return [
      this.#handle('IOMMU_IOAS_MAP'),
      this.id,
      m.memory[DMA_HANDLE](),
      m.offset,
      m.iova,
      m.size,
      m.read,
      m.write,
    ];
  }

  /** The iommufd's node (`/dev/iommu`). */
  get path(): string {
    return this.iommufd.path;
  }

  /** True once closed (or once its iommufd closed). */
  get closed(): boolean {
    return this.#closed || this.iommufd.closed;
  }

  /** IOMMU_IOAS_IOVA_RANGES, asked afresh: the usable ranges and the IOVA alignment. */
  iovaRanges(): IoasIovaRanges {
    this.#ranges = parseIovaRanges(
      native.iommufdIoasIovaRanges(this.#handle('IOMMU_IOAS_IOVA_RANGES'), this.id),
    );
    return this.#ranges;
  }

  /**
   * The IOAS's limits as the record applies them: the IOVA ranges and the granularity of a mapping,
   * the larger of the IOVA alignment and the host page (vfio-bridge maps whole host pages).
   */
  iommuInfo(): IoasIommuInfo {
    const r = this.iovaRanges();
    const page = Math.max(r.alignment, HOST_PAGE);
    return { pageSizes: [page], minPageSize: page, iovaRanges: r.ranges, iovaAlignment: r.alignment };
  }

  #limits(): DmaLimits {
    const r = this.#ranges ?? this.iovaRanges();
    const page = Math.max(r.alignment, HOST_PAGE);
    return {
      pageSize: page,
      pageSizeSource: `out_iova_alignment is ${hex(r.alignment)} and the host page ${hex(HOST_PAGE)}`,
      iovaRanges: r.ranges,
    };
  }

  /**
   * Map `size` bytes of `memory` (guest RAM or a Mapping) from `offset` at exactly `iova`
   * (IOMMU_IOAS_MAP with IOMMU_IOAS_MAP_FIXED_IOVA). Refused before the ioctl, each with a VfioError
   * naming the numbers, as Container.mapDma refuses them: `ECLOSED`, `EZEROSIZE`, `EALIGN`,
   * `EIOVARANGE` (outside the ranges the attached devices leave), `EOVERLAP`. Kernel failures keep
   * their errno; ENOMEM carries the RLIMIT_MEMLOCK hint (iommufd accounts per user).
   */
  mapDma(req: DmaMapRequest): void {
    this.#handle('IOMMU_IOAS_MAP');
    this.#dma.map(req);
  }

  /** {@link mapDma} with the ioctl on the libuv thread pool; checked at once, recorded once mapped. */
  async mapDmaAsync(req: DmaMapRequest): Promise<void> {
    this.#handle('IOMMU_IOAS_MAP');
    await this.#dma.mapAsync(req);
  }

  /**
   * Unmap [iova, iova + size), exactly one or more whole recorded mappings with no gap
   * (`ENOTMAPPED` otherwise, before the ioctl: the kernel would say ENOENT). Returns the bytes unmapped.
   */
  unmapDma(iova: number, size: number): number {
    this.#handle('IOMMU_IOAS_UNMAP');
    return this.#dma.unmap(iova, size);
  }

  /** Every DMA mapping this IOAS made and has not unmapped, in IOVA order. */
  dmaMappings(): DmaMapping[] {
    return this.#dma.list();
  }

  /** Bytes currently mapped for DMA in this IOAS. */
  get dmaMappedBytes(): number {
    return this.#dma.mappedBytes;
  }

  /**
   * VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach `device` (a cdev bound to this IOAS's iommufd) to this
   * IOAS; the kernel makes (or shares) a page table for it. Returns that HWPT's ID. The IOVA ranges
   * are re-read: the device's reserved regions leave them. A mediated device sits behind no IOMMU:
   * it becomes an access of the IOAS (its parent driver pins and reads pages through it, and is told
   * of each unmap), no page table is made, and the ID returned is the IOAS's own; the IOAS's
   * alignment is a host page from then on, so every mapping must be page-aligned (ours are).
   * @throws VfioError ENOTBOUND (a device opened through its group, or bound to another iommufd),
   * or the kernel's (EINVAL: a mapping lies in the device's reserved regions)
   */
  attach(device: Device): number {
    return this.#attachTo(device, this.id);
  }

  /** {@link attach} through a page table allocated here. @internal */
  _attachHwpt(device: Device, hwpt: number): number {
    this.#checkIommu('VFIO_DEVICE_ATTACH_IOMMUFD_PT', device);
    return this.#attachTo(device, hwpt);
  }

  /**
   * A mediated device has no IOMMU to give a page table: the kernel would answer ENOENT (its ID
   * names an access, not a device) for a HWPT made for it or attached through.
   */
  #checkIommu(op: string, device: Device): void {
    if (!isMdevUuid(device?.bdf)) return;
    throw new VfioError({
      message: `${op}: mediated device ${device.bdf} sits behind no IOMMU, so it has no hardware page table`,
      code: 'ENOHWPT',
      op,
      path: this.path,
      bdf: device.bdf,
      hint: 'attach it to the IOAS itself (ioas.attach(device)): its parent driver pins pages through the IOAS',
    });
  }

  #attachTo(device: Device, pt: number): number {
    const op = 'VFIO_DEVICE_ATTACH_IOMMUFD_PT';
    this.#handle(op);
    this.#checkBound(op, device);
    const hwpt = native.vfioDeviceAttachIommufdPt(device._handle, pt);
    this.#attached.set(device, { device, hwpt });
    this.#ranges = null;
    return hwpt;
  }

  /** VFIO_DEVICE_DETACH_IOMMUFD_PT: `device` blocks DMA until attached again. */
  detach(device: Device): void {
    const op = 'VFIO_DEVICE_DETACH_IOMMUFD_PT';
    this.#handle(op);
    if (this.#attached.get(device) === undefined || device.closed) {
      throw new VfioError({
        message: `${op}: ${device.bdf} is not attached to IOAS ${this.id}`,
        code: 'ENOTATTACHED',
        op,
        path: this.path,
        bdf: device.bdf,
        hint: 'attachedDevices() lists what is attached; closing a device detaches it',
      });
    }
    native.vfioDeviceDetachIommufdPt(device._handle);
    this.#attached.delete(device);
    this.#ranges = null;
  }

  /** The open devices attached to this IOAS (a closed device has left it). */
  attachedDevices(): Device[] {
    for (const d of this.#attached.keys()) if (d.closed) this.#attached.delete(d);
    return [...this.#attached.keys()];
  }

  /**
   * IOMMU_HWPT_ALLOC: a kernel-managed page table over this IOAS for bound `device`, to attach
   * devices through explicitly (Hwpt.attach) instead of the one the kernel makes on attach; with
   * `dirtyTracking` the IOMMU must track dirty pages for it.
   */
  allocHwpt(device: Device, opts: HwptOptions = {}): Hwpt {
    const op = 'IOMMU_HWPT_ALLOC';
    const h = this.#handle(op);
    const devId = this.#checkBound(op, device);
    this.#checkIommu(op, device);
    const flags = opts.dirtyTracking === true ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0;
    return new Hwpt(this, native.iommufdHwptAlloc(h, devId, this.id, flags));
  }

  #checkBound(op: string, device: Device): number {
    const b = device?._iommufd;
    if (b === null || b === undefined || b.iommufd !== this.iommufd) {
      throw new VfioError({
        message: `${op}: ${device?.bdf ?? 'the device'} is not bound to ${this.iommufd.path} of IOAS ${this.id}`,
        code: 'ENOTBOUND',
        op,
        path: this.path,
        ...(device?.bdf !== undefined ? { bdf: device.bdf } : {}),
        hint:
          b === null
            ? 'the device was opened through its group (type1): open it through its cdev with openCdevDevice(bdf, iommufd)'
            : 'open the device through its cdev bound to the same Iommufd as this IOAS',
      });
    }
    return b.devId;
  }

  /**
   * Unmap every mapping this IOAS made, then IOMMU_DESTROY it. Idempotent; later use throws
   * VfioError `'ECLOSED'`. Destroying an IOAS with devices attached fails with EBUSY (close or detach
   * them first); the unmaps happened all the same.
   */
  close(): void {
    if (this.#closed) return;
    if (this.iommufd.closed) {
      this.#closed = true;
      return;
    }
    let first: unknown;
    try {
      this.#dma.unmapAll();
    } catch (e) {
      first = e;
    }
    this.#closed = true;
    try {
      this.iommufd._destroy(this.id);
    } catch (e) {
      first ??= this.#destroyFailed(e);
    }
    if (first !== undefined) throw first;
  }

  /** Closing with the iommufd: an IOAS a device still holds goes with the devices. @internal */
  _closeWithIommufd(): void {
    if (this.#closed) return;
    try {
      this.#dma.unmapAll();
    } finally {
      this.#closed = true;
      try {
        this.iommufd._destroy(this.id);
      } catch {
        // Still held by a bound device: the kernel frees it when the last device unbinds.
      }
    }
  }

  #destroyFailed(e: unknown): unknown {
    if (!(e instanceof VfioError) || e.code !== 'EBUSY') return e;
    const held = this.attachedDevices().map((d) => d.bdf);
    return new VfioError({
      message: `IOMMU_DESTROY: IOAS ${this.id} is still in use (${held.length > 0 ? held.join(', ') : 'a page table or a device'})`,
      code: 'EBUSY',
      ...(e.errno !== undefined ? { errno: e.errno } : {}),
      op: 'IOMMU_DESTROY',
      path: this.path,
      hint: 'close (or detach) the devices attached to it and its Hwpts first; closing the Iommufd frees it with them',
    });
  }

  /** Same as {@link Ioas.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #handle(op: string) {
    if (this.#closed || this.iommufd.closed)
      throw closedError(op, `IOAS ${this.id}`, { path: this.iommufd.path });
    return iommufdHandle(this.iommufd, op);
  }
}

/**
 * A kernel-managed hardware page table over an {@link Ioas}, from {@link Ioas.allocHwpt}: what its
 * IOAS maps, it maps. Attach devices through it; close it once none is attached.
 */
export class Hwpt implements Disposable {
  /** The page table's ID in the iommufd. */
  readonly id: number;
  /** The IOAS the page table was allocated in and translates: closing it closes the page table too. */
  readonly ioas: Ioas;
  #closed = false;

  /** @internal */
  constructor(ioas: Ioas, id: number) {
    if (!(ioas instanceof Ioas)) throw new ArgTypeError('Hwpt: made by Ioas.allocHwpt');
    this.ioas = ioas;
    this.id = id;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed || this.ioas.closed;
  }

  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT through this page table; returns its ID. */
  attach(device: Device): number {
    if (this.closed) {
      throw closedError('VFIO_DEVICE_ATTACH_IOMMUFD_PT', `HWPT ${this.id}`, { path: this.ioas.path });
    }
    return this.ioas._attachHwpt(device, this.id);
  }

  /**
   * IOMMU_DESTROY of the page table. Idempotent. While a device is attached through it this fails
   * with EBUSY and the page table stays (closing the Iommufd frees it with the rest).
   */
  close(): void {
    if (this.closed) return;
    this.ioas.iommufd._destroy(this.id);
    this.#closed = true;
  }

  /** Same as {@link Hwpt.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
