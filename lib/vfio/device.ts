/**
 * The VFIO Device: one device fd, its info, region and IRQ queries, its resets and interrupts, and
 * its lifecycle. Beside it: region I/O through the fd and mmap with the checks each access gets
 * (region-io.ts), the hot reset's info, the group fds it passes and its errors (hot-reset.ts), the
 * interrupts themselves (irq.ts, irq-queue.ts) and the tables of what is open (open-objects.ts).
 */
import { ArgRangeError, ArgTypeError, closedError } from '../base/error';
import { native, type NativeHandle } from '../native';
import { VfioError } from '../base/native-errors';
import { addOpenDevice, removeOpenDevice } from './open-objects';
import { hotResetFds, type HotResetInfo, parseHotResetInfo } from './hot-reset';
import { DeviceIrq, type IrqOptions } from './irq';
import { IrqChangeQueue } from './irq-queue';
import type { Mapping } from './mapping';
import { RegionIo } from './region-io';
import type { AccessSize } from '../types';
import {
  parseDeviceInfo,
  parseIrqInfo,
  parseRegionInfo,
  type DeviceInfo,
  type IrqInfo,
  type RegionInfo,
} from './uapi';

function checkIndex(what: string, index: unknown): number {
  if (typeof index !== 'number') throw new ArgTypeError(`${what} must be a number, got ${typeof index}`);
  if (!Number.isInteger(index) || index < 0 || index > 0xffff_ffff) {
    throw new ArgRangeError(`${what} ${index} is not a valid index`);
  }
  return index;
}

/** How a device cdev is bound to an iommufd (VFIO_DEVICE_BIND_IOMMUFD). @internal */
export interface IommufdBinding {
  /** The iommufd (an Iommufd; typed loosely so this file needs nothing of iommufd.ts). */
  readonly iommufd: { readonly path: string; readonly closed: boolean };
  /** The device's ID in the iommufd (out_devid). */
  readonly devId: number;
}

/**
 * A VFIO device fd, from {@link Group.openDevice} (the container/group uAPI) or `openCdevDevice`
 * (its cdev bound to an iommufd): info, region and IRQ info, reset, region I/O through the fd (one
 * pread/pwrite per access), and mappings of mmap-capable regions. Both kinds work the same.
 */
export class Device implements Disposable {
  /** The PCI address, or a mediated device's UUID: the name the device was opened by. */
  readonly bdf: string;
  readonly #handle: NativeHandle;
  readonly #groupPath: string;
  readonly #regions = new Map<number, RegionInfo>();
  #closed = false;
  /** The DeviceIrqs handed out (closed ones are pruned as new ones are made). */
  readonly #irqs = new Set<DeviceIrq>();
  #irqQueue: IrqChangeQueue | null = null;
  #onIrqError: (error: unknown) => void = () => undefined;
  readonly #binding: IommufdBinding | null;
  /** Region I/O through the fd and mmap, with the checks each access gets. */
  readonly #io: RegionIo;

  private constructor(handle: NativeHandle, bdf: string, groupPath: string, binding: IommufdBinding | null) {
    this.#handle = handle;
    this.bdf = bdf;
    this.#groupPath = groupPath;
    this.#binding = binding;
    this.#io = new RegionIo(bdf, groupPath);
  }

  /**
   * Wrap a device handle from the group (`binding` null) or a device cdev bound to an iommufd.
   * @internal
   */
  static _fromHandle(
    handle: NativeHandle,
    bdf: string,
    groupPath: string,
    binding: IommufdBinding | null = null,
  ): Device {
    const d = new Device(handle, bdf, groupPath, binding);
    addOpenDevice(d, groupPath);
    return d;
  }

  /** Which uAPI the device was opened through: its group (`type1`) or its cdev (`iommufd`). */
  get backend(): 'type1' | 'iommufd' {
    return this.#binding === null ? 'type1' : 'iommufd';
  }

  /** The node the device fd came from: its group (`/dev/vfio/12`) or its cdev (`/dev/vfio/devices/vfio0`). */
  get path(): string {
    return this.#groupPath;
  }

  /** The device's ID in its iommufd (for IOMMU_HWPT_ALLOC, IOMMU_GET_HW_INFO), or null (type1). */
  get iommufdDevId(): number | null {
    return this.#binding?.devId ?? null;
  }

  /** The iommufd binding, for Ioas.attach. @internal */
  get _iommufd(): IommufdBinding | null {
    return this.#binding;
  }

  /** The device fd (-1 once closed). */
  get fd(): number {
    return native.fdOf(this.#handle);
  }

  /** @internal The device fd's handle, for a vCPU thread's exit table (lib/vmm). */
  get _handle(): NativeHandle {
    return this.#open('exit table');
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** VFIO_DEVICE_GET_INFO. */
  info(): DeviceInfo {
    return parseDeviceInfo(native.vfioDeviceInfo(this.#open('VFIO_DEVICE_GET_INFO')));
  }

  /**
   * VFIO_DEVICE_GET_REGION_INFO with its whole capability chain. Cached: region layout does not
   * change while the device is open.
   */
  regionInfo(index: number): RegionInfo {
    checkIndex('region index', index);
    const h = this.#open('VFIO_DEVICE_GET_REGION_INFO');
    let info = this.#regions.get(index);
    if (info === undefined) {
      info = parseRegionInfo(native.vfioRegionInfo(h, index));
      this.#regions.set(index, info);
    }
    return info;
  }

  /** VFIO_DEVICE_GET_IRQ_INFO. */
  irqInfo(index: number): IrqInfo {
    checkIndex('IRQ index', index);
    return parseIrqInfo(native.vfioIrqInfo(this.#open('VFIO_DEVICE_GET_IRQ_INFO'), index));
  }

  /**
   * VFIO_DEVICE_RESET. Mappings of the BARs fault (VfioError 'SIGBUS') while it runs.
   * @throws VfioError EINVAL with a hint when the device has no function reset (`info().reset`)
   */
  reset(): void {
    const h = this.#open('VFIO_DEVICE_RESET');
    try {
      native.vfioDeviceReset(h);
    } catch (e) {
      throw this.#resetFailed(e);
    }
  }

  /**
   * {@link Device.reset} with the ioctl on the libuv thread pool: a function-level reset waits
   * 100 ms and more in the kernel. The device is checked at once, as reset checks it; an aborted
   * `signal` refuses to start it (the kernel's reset itself cannot be interrupted).
   */
  async resetAsync(opts: { signal?: AbortSignal } = {}): Promise<void> {
    opts.signal?.throwIfAborted();
    const h = this.#open('VFIO_DEVICE_RESET');
    try {
      await native.vfioDeviceResetAsync(h);
    } catch (e) {
      throw this.#resetFailed(e);
    }
  }

  /** VFIO_DEVICE_RESET failed with `e`: the kernel's bare EINVAL means "no reset method". */
  #resetFailed(e: unknown): unknown {
    if (!(e instanceof VfioError) || e.code !== 'EINVAL' || this.info().reset) return e;
    return new VfioError({
      message: `VFIO_DEVICE_RESET: ${this.bdf} has no function reset (VFIO_DEVICE_FLAGS_RESET is clear)`,
      code: 'EINVAL',
      ...(e.errno !== undefined ? { errno: e.errno } : {}),
      op: 'VFIO_DEVICE_RESET',
      path: this.#groupPath,
      bdf: this.bdf,
      hint:
        'the device offers neither FLR, a PM reset (D3hot->D0 without NoSoftRst) nor a slot or bus ' +
        'reset it may use alone; what remains is a hot reset of its whole bus ' +
        '(VFIO_DEVICE_PCI_HOT_RESET, with every affected group owned by this process), or none',
    });
  }

  /**
   * VFIO_DEVICE_SET_IRQS, raw: `flags` is one VFIO_IRQ_SET_DATA_* or'ed with one ACTION_*; `data`
   * is the payload (int32 fds, or one byte per vector). {@link enableIrq} builds on it.
   */
  setIrqs(index: number, flags: number, start: number, count: number, data?: Uint8Array): void {
    checkIndex('IRQ index', index);
    checkIndex('IRQ set flags', flags);
    checkIndex('IRQ start', start);
    checkIndex('IRQ count', count);
    if (data !== undefined && !(data instanceof Uint8Array)) {
      throw new ArgTypeError('setIrqs: data must be a Uint8Array');
    }
    native.vfioSetIrqs(this.#open('VFIO_DEVICE_SET_IRQS'), index, flags, start, count, data);
  }

  /**
   * Enables IRQ index `index` (VFIO_PCI_INTX/MSI/MSIX/ERR/REQ_IRQ_INDEX) with eventfd triggers,
   * optionally delivered into this environment's event loop. See {@link DeviceIrq}. After
   * {@link queueIrqChanges}, the kernel gets the new index's changes on the thread pool.
   */
  enableIrq(index: number, opts: IrqOptions = {}): DeviceIrq {
    checkIndex('IRQ index', index);
    this.#open('VFIO_DEVICE_SET_IRQS');
    for (const irq of this.#irqs) if (irq.closed) this.#irqs.delete(irq);
    const irq = new DeviceIrq(this.#irqQueue ?? this, index, opts);
    this.#irqs.add(irq);
    return irq;
  }

  /**
   * From now on, the IRQ indexes {@link enableIrq} enables make their changes (every
   * VFIO_DEVICE_SET_IRQS: enable, disable, unmask) on the libuv thread pool, in the order they are
   * made, instead of at once: enabling MSI-X can take the kernel tens of milliseconds, which a
   * VMM's event loop must not wait for. A change the kernel refuses goes to `onError` (a VfioError
   * naming the index and vectors) instead of being thrown; {@link irqChanges} is a promise of those
   * made so far. Calling it again replaces `onError`. Indexes enabled before keep changing at once.
   * What is queued holds its own duplicate of the device fd: close() returns at once, and the
   * kernel releases the device once the last change has been made; closeAsync() resolves only
   * then (its close is queued behind them), so a device closed with it can be opened again at once.
   */
  queueIrqChanges(onError: (error: unknown) => void): void {
    if (typeof onError !== 'function') throw new ArgTypeError('queueIrqChanges: onError must be a function');
    this.#open('VFIO_DEVICE_SET_IRQS');
    this.#onIrqError = onError;
    this.#irqQueue ??= new IrqChangeQueue(
      { bdf: this.bdf, irqInfo: (i) => this.irqInfo(i), handle: (op) => this.#open(op) },
      (e) => this.#onIrqError(e),
    );
  }

  /** Resolves once every interrupt change queued so far is made (or refused); null when none waits. */
  get irqChanges(): Promise<void> | null {
    return this.#irqQueue?.pending ?? null;
  }

  /**
   * VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: the devices (and their groups) a bus reset would reset.
   * @throws VfioError ENODEV when the device cannot be hot-reset (no bus or slot reset)
   */
  hotResetInfo(): HotResetInfo {
    return parseHotResetInfo(native.vfioHotResetInfo(this.#open('VFIO_DEVICE_GET_PCI_HOT_RESET_INFO')));
  }

  /**
   * VFIO_DEVICE_PCI_HOT_RESET: a secondary bus reset of the device's bus (or slot), with the fd of
   * every affected group to prove this process owns them. `groups` defaults to the groups open in
   * this environment. A device opened through its cdev passes none: the kernel checks that every
   * affected device is bound to the same iommufd.
   * @throws VfioError `'EGROUPS'` naming each affected group that is not open here
   */
  hotReset(groups?: readonly { readonly number: number; readonly fd: number }[]): void {
    const h = this.#open('VFIO_DEVICE_PCI_HOT_RESET');
    native.vfioHotReset(h, hotResetFds(this.bdf, this.hotResetInfo(), groups));
  }

  /**
   * {@link Device.hotReset} with the bus reset on the libuv thread pool (it waits a second or more
   * in the kernel). The groups are checked, and their fds duplicated, at once; an aborted `signal`
   * refuses to start it (a bus reset under way cannot be interrupted).
   */
  async hotResetAsync(
    groups?: readonly { readonly number: number; readonly fd: number }[],
    opts: { signal?: AbortSignal } = {},
  ): Promise<void> {
    opts.signal?.throwIfAborted();
    const h = this.#open('VFIO_DEVICE_PCI_HOT_RESET');
    await native.vfioHotResetAsync(h, hotResetFds(this.bdf, this.hotResetInfo(), groups));
  }

  /** Read exactly `size` bytes at `offset` in `region` with one pread; bigint when size is 8. */
  read(region: number, offset: number, size: AccessSize): number | bigint {
    const h = this.#open('pread');
    return this.#io.read(h, this.regionInfo(region), offset, size);
  }

  /** Write exactly `size` bytes at `offset` in `region` with one pwrite; `v` is a bigint when size is 8. */
  write(region: number, offset: number, size: AccessSize, v: number | bigint): void {
    const h = this.#open('pwrite');
    this.#io.write(h, this.regionInfo(region), offset, size, v);
  }

  /** Read `length` bytes at `offset` in `region` into a new Buffer with one pread (config space, dumps). */
  readBlock(region: number, offset: number, length: number): Buffer {
    const h = this.#open('pread');
    return this.#io.readBlock(h, this.regionInfo(region), offset, length);
  }

  /** Write all of `data` at `offset` in `region` with one pwrite. */
  writeBlock(region: number, offset: number, data: Uint8Array): void {
    if (!(data instanceof Uint8Array))
      throw new ArgTypeError('writeBlock: data must be a Uint8Array or Buffer');
    const h = this.#open('pwrite');
    this.#io.writeBlock(h, this.regionInfo(region), offset, data);
  }

  /**
   * mmap `length` bytes of `region` from `offset` (both relative to the region). The mapping is
   * writable when the region is. It stays valid after the device is closed.
   *
   * The limit is the region's size rounded up to a whole page, as the kernel's own check is: a BAR
   * smaller than a page can be mapped as the whole page, whose rest vfio-pci reserves, which is what
   * lets a VMM hand a sub-page BAR to KVM as one page. A BAR of a PCI function (not a mediated
   * device's region) is device memory, which vfio-pci maps without struct pages
   * ({@link Mapping.deviceMemory}).
   * @throws VfioError ENOTMAPPABLE, or mmap's error (EINVAL: outside the mappable areas)
   */
  map(region: number, offset: number, length: number): Mapping {
    const h = this.#open('mmap');
    return this.#io.map(h, this.regionInfo(region), region, offset, length);
  }

  /** Close the device fd. Idempotent; later use throws VfioError `'ECLOSED'`. Mappings stay valid. */
  close(): void {
    if (this.#closed) return;
    const irqError = this.#closeIrqs();
    this.#closed = true;
    removeOpenDevice(this);
    native.closeFd(this.#handle);
    if (irqError !== undefined) throw irqError;
  }

  /**
   * {@link close}, with the fd closed on the libuv thread pool: the kernel disables and resets the
   * device when its last fd goes, which takes it tens of ms. The device is closed at once.
   */
  async closeAsync(): Promise<void> {
    if (this.#closed) return;
    const irqError = this.#closeIrqs();
    this.#closed = true;
    removeOpenDevice(this);
    await native.closeFdAsync(this.#handle);
    if (irqError !== undefined) throw irqError;
  }

  /**
   * Closing a device closes what it handed out: each DeviceIrq still open is disabled and its
   * watcher stopped, so none keeps the process alive or watches an fd the kernel let go. Returns
   * the first failure, which close() throws once the device itself is closed.
   */
  #closeIrqs(): unknown {
    const irqs = [...this.#irqs];
    this.#irqs.clear();
    let first: unknown;
    for (const irq of irqs) {
      try {
        irq.close();
      } catch (e) {
        first ??= e;
      }
    }
    return first;
  }

  /** Same as {@link Device.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@link Device.closeAsync}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.closeAsync();
  }

  #open(op: string): NativeHandle {
    if (this.#closed) throw closedError(op, `device ${this.bdf}`, { bdf: this.bdf, path: this.#groupPath });
    return this.#handle;
  }
}
