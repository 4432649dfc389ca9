import { EventEmitter } from 'node:events';

import { ArgRangeError, ArgTypeError } from '../base/error';
import { native, type NativeIrqWatcher } from '../native';
import { errnoName, VfioError } from '../base/native-errors';
import { checkFd, EventFd } from '../base/eventfd';
import type { IrqInfo } from './uapi';

/** VFIO_IRQ_SET_* flags, as in linux/vfio.h: no data (the action applies to the whole range). */
export const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
/** The data is one byte per vector: whether to apply the action to it. */
export const VFIO_IRQ_SET_DATA_BOOL = 1 << 1;
/** The data is one eventfd (an int32, -1 for none) per vector. */
export const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
/** Mask the vectors (INTx only on vfio-pci). */
export const VFIO_IRQ_SET_ACTION_MASK = 1 << 3;
/** Unmask the vectors, or with DATA_EVENTFD set the unmask (resample) eventfd. */
export const VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4;
/** Trigger the vectors (a loopback), or with DATA_EVENTFD set their trigger eventfds. */
export const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;

/** Called once per wake-up of a vector's eventfd with the number of interrupts it coalesced. */
export type IrqHandler = (vector: number, count: number) => void;

/** An eventfd given by the caller: its number, or an {@link EventFd}. The caller keeps owning it. */
export type EventFdLike = number | EventFd;

function fdOf(e: EventFdLike, what: string): number {
  if (e instanceof EventFd) {
    const fd = e.fd;
    if (fd < 0) throw new ArgRangeError(`${what}: the EventFd is closed`);
    return fd;
  }
  checkFd(e, what);
  return e;
}

/**
 * The fds watched in this environment: libuv allows one poll handle per fd and loop, so a second
 * watch of the same fd is refused here instead of confusing the loop.
 */
const watched = new Map<number, { watcher: IrqWatcher; vector: number }>();

/**
 * IrqWatcher: delivers eventfd wake-ups into this environment's own event loop (the main thread's,
 * or a worker's). Each wake-up drains the eventfd once and calls the handler once with the vector
 * and the coalesced count; nothing is allocated per interrupt. By default the watched fds keep the
 * process alive, as a VMM expects; {@link IrqWatcher.unref} lets it exit. The watcher stays alive
 * without a JavaScript reference until {@link IrqWatcher.close}, and closes itself when its
 * environment exits. It never closes the fds it watches.
 */
export class IrqWatcher implements Disposable {
  readonly #native: NativeIrqWatcher;
  #closed = false;
  #refed = true;
  #fds: number[] = [];

  /**
   * @param handler called with (vector, count)
   * @param onError called when a watched fd fails (count is then -errno); by default a process
   *   warning. The vector is no longer watched afterwards.
   */
  constructor(handler: IrqHandler, onError?: (vector: number, error: VfioError) => void) {
    if (typeof handler !== 'function') throw new ArgTypeError('the interrupt handler must be a function');
    const report =
      onError ??
      ((vector: number, e: VfioError): void => {
        process.emitWarning(`interrupt vector ${vector}: ${e.message}`, {
          type: 'VfioIrqWarning',
          code: 'VFIO_BRIDGE_IRQ_FAILED',
        });
      });
    this.#native = native.irqWatcherOpen((vector, count) => {
      if (count > 0) {
        handler(vector, count);
        return;
      }
      const errno = -count;
      this.unwatch(vector);
      report(
        vector,
        new VfioError({
          message: `watching fd of vector ${vector} failed`,
          code: errnoName(errno),
          errno,
          op: 'uv_poll',
        }),
      );
    });
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Watches `fd` for `vector` (0..2047), replacing what watched that vector before. */
  watch(vector: number, fd: EventFdLike): void {
    checkVector(vector, 2047);
    const n = fdOf(fd, `vector ${vector} eventfd`);
    const h = this.#open();
    const owner = watched.get(n);
    if (owner && (owner.watcher !== this || owner.vector !== vector)) {
      throw new ArgRangeError(
        `fd ${n} is already watched (vector ${owner.vector}${owner.watcher === this ? '' : ' of another watcher'}): give each vector its own eventfd`,
      );
    }
    const old = this.#fds[vector];
    native.irqWatcherAdd(h, vector, n);
    if (old !== undefined && old !== n) watched.delete(old);
    this.#fds[vector] = n;
    watched.set(n, { watcher: this, vector });
  }

  /** Stops watching `vector` (no-op when nothing watches it). */
  unwatch(vector: number): void {
    checkVector(vector, 2047);
    if (this.#closed) return;
    native.irqWatcherRemove(this.#native, vector);
    const old = this.#fds[vector];
    if (old !== undefined) watched.delete(old);
    delete this.#fds[vector];
  }

  /** The fd watched for `vector`, or -1. */
  fd(vector: number): number {
    return this.#fds[vector] ?? -1;
  }

  /** Interrupts keep the process alive (the default). */
  ref(): this {
    native.irqWatcherRef(this.#open(), true);
    this.#refed = true;
    return this;
  }

  /** Interrupts are delivered while the process runs for other reasons, but do not keep it alive. */
  unref(): this {
    native.irqWatcherRef(this.#open(), false);
    this.#refed = false;
    return this;
  }

  /** Whether the watcher keeps the process alive. */
  hasRef(): boolean {
    return !this.#closed && this.#refed;
  }

  /** Stops all delivery; no handler call happens after it returns. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const fd of this.#fds) if (fd !== undefined) watched.delete(fd);
    this.#fds = [];
    native.irqWatcherClose(this.#native);
  }

  /** Same as {@link IrqWatcher.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(): NativeIrqWatcher {
    if (this.#closed) {
      throw new VfioError({
        message: 'the interrupt watcher is closed',
        code: 'ECLOSED',
        op: 'irq watcher',
        hint: 'the object was closed; open a new one',
      });
    }
    return this.#native;
  }
}

function checkVector(v: unknown, max: number, what = 'vector'): asserts v is number {
  if (typeof v !== 'number') throw new ArgTypeError(`${what} must be a number, got ${typeof v}`);
  if (!Number.isInteger(v) || v < 0 || v > max) throw new ArgRangeError(`${what} ${v} is not in [0, ${max}]`);
}

/** The raw VFIO_DEVICE_SET_IRQS a {@link DeviceIrq} drives, as lib/vfio's Device offers it. */
export interface IrqDevice {
  /** The device's PCI address (or a mediated device's UUID), for messages. */
  readonly bdf: string;
  /** VFIO_DEVICE_GET_IRQ_INFO for `index`. */
  irqInfo(index: number): IrqInfo;
  /** VFIO_DEVICE_SET_IRQS: `flags` on vectors `start` to `start + count - 1`, with their `data`. */
  setIrqs(index: number, flags: number, start: number, count: number, data?: Uint8Array): void;
}

/** Options of {@link Device.enableIrq}. */
export interface IrqOptions {
  /** How many vectors to enable, from 0 (default 1; at most the index's count). */
  vectors?: number;
  /**
   * Caller-owned trigger eventfds, per vector (they stay the caller's: close() leaves them open).
   * `undefined` (or a missing entry) gets an eventfd created and owned here; `null` leaves that
   * vector without a trigger (an MSI-X subset).
   */
  eventfds?: readonly (EventFdLike | null | undefined)[];
  /**
   * Added as an `interrupt` listener.
   * @deprecated use `irq.on('interrupt', (vector, count) => ...)`
   */
  onInterrupt?: IrqHandler;
  /**
   * Added as an `error` listener (with its arguments the other way round).
   * @deprecated use `irq.on('error', (error, vector) => ...)`
   */
  onError?: (vector: number, error: VfioError) => void;
  /**
   * INTx only: an unmask (resample) eventfd. `true` creates one here; a number or EventFd is the
   * caller's (e.g. the resamplefd of a KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE).
   */
  resample?: boolean | EventFdLike;
  /** Whether interrupts keep the process alive while they are watched (default true). */
  ref?: boolean;
}

/** The events of a {@link DeviceIrq}. */
export type DeviceIrqEvents = {
  /** One wake-up of `vector`'s eventfd, with how many interrupts it coalesced. */
  interrupt: [vector: number, count: number];
  /**
   * Watching `vector`'s eventfd failed on the host (uv_poll: the fd was closed behind the
   * watcher's back, say); the vector is no longer watched. Never caused by the guest.
   */
  error: [error: VfioError, vector: number];
};

/**
 * DeviceIrq: one enabled IRQ index of a device (INTx, MSI, MSI-X, ERR or REQ), its trigger eventfds,
 * and their delivery into the event loop as Node events. From {@link Device.enableIrq}.
 *
 * `fds` are the raw trigger descriptors, per vector (-1 where none), ready for KVM_IRQFD. While the
 * DeviceIrq has an `interrupt` listener the same fds are watched on the event loop: each wake-up is
 * one `interrupt` event with the vector and the count the eventfd coalesced (so `events.once(irq,
 * 'interrupt', { signal })` and `events.on` work). Without one nothing is watched, and no
 * JavaScript runs per interrupt: the fds are a consumer's such as KVM_IRQFD.
 *
 * `error` is a host-side failure of the watch (never the guest's doing). Unlike a plain
 * EventEmitter, a DeviceIrq without an `error` listener does not throw it: it becomes a process
 * warning (`VFIO_BRIDGE_IRQ_FAILED`) and the other vectors go on, so a VMM is never brought down
 * by it. close() disables the index on the device, stops delivery and closes only the eventfds it
 * created.
 */
export class DeviceIrq extends EventEmitter<DeviceIrqEvents> implements Disposable {
  /** The VFIO IRQ index this drives (`VFIO_PCI_INTX_IRQ_INDEX`, `VFIO_PCI_MSI_IRQ_INDEX`, ...). */
  readonly index: number;
  /** The index's VFIO_DEVICE_GET_IRQ_INFO as read when it was enabled: its vector count and flags. */
  readonly info: IrqInfo;
  readonly #device: IrqDevice;
  #watcher: IrqWatcher | null = null;
  #ref: boolean;
  #triggers: (EventFd | number | null)[] = [];
  #owned = new Set<EventFd>();
  #resample: EventFd | number | null = null;
  #enabled = false;
  #closed = false;

  /** @internal use Device.enableIrq */
  constructor(device: IrqDevice, index: number, opts: IrqOptions = {}) {
    super();
    this.#device = device;
    this.index = index;
    this.info = device.irqInfo(index);
    if (this.info.count === 0) {
      throw new VfioError({
        message: `${device.bdf} has no interrupts at IRQ index ${index}`,
        code: 'ENOIRQ',
        op: 'VFIO_DEVICE_SET_IRQS',
        bdf: device.bdf,
        hint: 'check irqInfo(index).count: the device does not implement this interrupt (e.g. no MSI capability)',
      });
    }
    if (!this.info.eventfd) {
      throw new VfioError({
        message: `IRQ index ${index} of ${device.bdf} does not signal through eventfds`,
        code: 'ENOIRQ',
        op: 'VFIO_DEVICE_SET_IRQS',
        bdf: device.bdf,
      });
    }
    const vectors = opts.vectors ?? Math.max(1, opts.eventfds?.length ?? 1);
    checkVector(vectors, this.info.count, 'vector count');
    if (vectors === 0) throw new ArgRangeError('vector count 0: enable at least one vector');
    if (opts.eventfds !== undefined && opts.eventfds.length > vectors) {
      throw new ArgRangeError(`${opts.eventfds.length} eventfds given for ${vectors} vectors`);
    }
    if (opts.resample !== undefined && opts.resample !== false && index !== 0) {
      throw new ArgRangeError('a resample eventfd exists only for INTx (index 0)');
    }
    if (opts.onInterrupt !== undefined && typeof opts.onInterrupt !== 'function') {
      throw new ArgTypeError('onInterrupt must be a function');
    }
    if (opts.onError !== undefined && typeof opts.onError !== 'function') {
      throw new ArgTypeError('onError must be a function');
    }
    this.#ref = opts.ref !== false;
    // Watching follows the interrupt listeners: the first starts it, the last one leaving stops it.
    (this as EventEmitter).on('newListener', (name: string | symbol) => {
      if (name === 'interrupt' && !this.#closed) this.#watch();
    });
    (this as EventEmitter).on('removeListener', (name: string | symbol) => {
      if (name === 'interrupt' && this.listenerCount('interrupt') === 0) this.#unwatchAll();
    });
    const onError = opts.onError;
    if (onError) this.on('error', (e, v) => onError(v, e));
    if (opts.onInterrupt) this.on('interrupt', opts.onInterrupt);
    try {
      for (let v = 0; v < vectors; v++) this.#triggers.push(this.#trigger(opts.eventfds?.[v], v));
      this.#setTriggers(0, this.#triggers);
      this.#enabled = true;
      if (opts.resample !== undefined && opts.resample !== false) this.setResample(opts.resample);
    } catch (e) {
      this.#teardown(false);
      throw e;
    }
  }

  /** How many vectors are enabled (the length of `fds`). */
  get vectors(): number {
    return this.#triggers.length;
  }

  /** Whether the index is enabled on the device. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The trigger fd of each vector (-1 where none): hand them to KVM_IRQFD. */
  get fds(): number[] {
    return this.#triggers.map((t) => (t === null ? -1 : typeof t === 'number' ? t : t.fd));
  }

  /** The INTx resample (unmask) fd, or -1: writing it unmasks the line, as KVM's resampler does. */
  get resampleFd(): number {
    const r = this.#resample;
    return r === null ? -1 : typeof r === 'number' ? r : r.fd;
  }

  /**
   * Replaces the trigger of one vector: an eventfd of the caller's, `undefined` for one created here,
   * or `null` for none. On MSI-X a vector past the enabled ones grows the set (see {@link resize}).
   */
  setVector(vector: number, eventfd: EventFdLike | null | undefined): void {
    this.#checkOpen();
    checkVector(vector, this.info.count - 1);
    if (vector >= this.#triggers.length) this.resize(vector + 1);
    const old = this.#triggers[vector];
    const t = this.#trigger(eventfd, vector);
    try {
      this.#setTriggers(vector, [t]);
    } catch (e) {
      this.#drop(t, vector, old);
      throw e;
    }
    this.#triggers[vector] = t;
    this.#drop(old, vector, t);
  }

  /**
   * Changes how many vectors are enabled. When the kernel allows it (MSI-X without NORESIZE) new
   * vectors are added in place and the others keep running; otherwise the index is disabled and
   * enabled again with every vector, as QEMU does (an interrupt arriving in between may be lost, so
   * a VMM then treats every vector as pending).
   */
  resize(vectors: number): void {
    this.#checkOpen();
    checkVector(vectors, this.info.count, 'vector count');
    if (vectors === 0) throw new ArgRangeError('vector count 0: use close() to disable the index');
    const n = this.#triggers.length;
    if (vectors === n) return;
    if (vectors > n) {
      const added: (EventFd | number | null)[] = [];
      for (let v = n; v < vectors; v++) added.push(this.#trigger(undefined, v));
      try {
        if (this.info.noresize) {
          this.disable();
          this.#triggers.push(...added);
          this.#setTriggers(0, this.#triggers);
          this.#enabled = true;
        } else {
          this.#setTriggers(n, added);
          this.#triggers.push(...added);
        }
      } catch (e) {
        for (const [i, t] of added.entries()) this.#drop(t, n + i, null);
        this.#triggers.length = n;
        throw e;
      }
      return;
    }
    const removed = this.#triggers.splice(vectors);
    this.disable();
    this.#setTriggers(0, this.#triggers);
    this.#enabled = true;
    for (const [i, t] of removed.entries()) this.#drop(t, vectors + i, null);
  }

  /**
   * Masks a vector at the device (VFIO_IRQ_SET_ACTION_MASK): only where the kernel has it (INTx;
   * MSI and MSI-X answer ENOTTY, and must be masked by emulation, as lib/pci does).
   */
  mask(vector = 0): void {
    this.#action(VFIO_IRQ_SET_ACTION_MASK, vector, 'mask');
  }

  /** Unmasks a vector (VFIO_IRQ_SET_ACTION_UNMASK): for INTx, the end of interrupt. */
  unmask(vector = 0): void {
    this.#action(VFIO_IRQ_SET_ACTION_UNMASK, vector, 'unmask');
  }

  /** Fires a vector in software (ACTION_TRIGGER with no data): a loopback through the kernel. */
  trigger(vector = 0): void {
    this.#checkOpen();
    checkVector(vector, this.#triggers.length - 1);
    this.#device.setIrqs(this.index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, vector, 1);
  }

  /**
   * INTx: sets (or with `null` removes) the unmask eventfd; a write to it unmasks the line in the
   * kernel without a syscall from here. `true` creates one, owned here.
   */
  setResample(resample: true | EventFdLike | null): void {
    this.#checkOpen();
    if (this.index !== 0) throw new ArgRangeError('a resample eventfd exists only for INTx (index 0)');
    const old = this.#resample;
    const next = resample === null ? null : resample === true ? EventFd.open() : resample;
    const fd = next === null ? -1 : fdOf(next, 'resample eventfd');
    try {
      this.#device.setIrqs(this.index, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1, i32(fd));
    } catch (e) {
      if (next instanceof EventFd && next !== resample) next.close();
      throw e;
    }
    this.#resample = next;
    if (old instanceof EventFd && this.#owned.has(old)) {
      this.#owned.delete(old);
      old.close();
    }
    if (next instanceof EventFd && resample === true) this.#owned.add(next);
  }

  /** Watched interrupts keep the process alive (the default). */
  ref(): this {
    this.#ref = true;
    this.#watcher?.ref();
    return this;
  }

  /** Interrupts no longer keep the process alive. */
  unref(): this {
    this.#ref = false;
    this.#watcher?.unref();
    return this;
  }

  /** Whether delivery keeps the process alive (false while nothing is watched). */
  hasRef(): boolean {
    return this.#watcher?.hasRef() ?? false;
  }

  /**
   * Disables the index on the device (SET_IRQS with count 0) but keeps the eventfds, so they stay
   * valid for KVM and {@link enable} can bring the same vectors back (a reset does this).
   */
  disable(): void {
    this.#checkOpen();
    if (!this.#enabled) return;
    this.#device.setIrqs(this.index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0);
    this.#enabled = false;
  }

  /** Enables the index again with the same eventfds (after {@link disable}). */
  enable(): void {
    this.#checkOpen();
    if (this.#enabled) return;
    this.#setTriggers(0, this.#triggers);
    this.#enabled = true;
    if (this.#resample !== null) {
      const fd = this.resampleFd;
      this.#device.setIrqs(this.index, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1, i32(fd));
    }
  }

  /**
   * Disables the index on the device, stops delivery and closes the eventfds created here (the
   * caller's are left open). Idempotent. A device that is already closed only loses the delivery.
   */
  close(): void {
    if (this.#closed) return;
    this.#teardown(true);
  }

  /** Same as {@link DeviceIrq.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #teardown(disable: boolean): void {
    this.#closed = true;
    try {
      if (disable && this.#enabled) {
        this.#device.setIrqs(this.index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0);
      }
    } catch (e) {
      // A closed device has already dropped its interrupts with its fd.
      if (!(e instanceof VfioError && e.code === 'ECLOSED')) throw e;
    } finally {
      this.#enabled = false;
      this.#watcher?.close();
      this.#watcher = null;
      for (const e of this.#owned) e.close();
      this.#owned.clear();
      this.#triggers = [];
      this.#resample = null;
    }
  }

  /** Starts watching every trigger (the first `interrupt` listener came). */
  #watch(): void {
    if (this.#watcher !== null) return;
    const w = new IrqWatcher(
      (vector, count) => this.emit('interrupt', vector, count),
      (vector, error) => this.#failed(vector, error),
    );
    if (!this.#ref) w.unref();
    try {
      for (const [v, t] of this.#triggers.entries()) if (t !== null) w.watch(v, t);
    } catch (e) {
      w.close();
      throw e;
    }
    this.#watcher = w;
  }

  /** Stops watching (the last `interrupt` listener left): the fds stay enabled for their consumer. */
  #unwatchAll(): void {
    this.#watcher?.close();
    this.#watcher = null;
  }

  #failed(vector: number, error: VfioError): void {
    if (this.listenerCount('error') > 0) {
      this.emit('error', error, vector);
      return;
    }
    process.emitWarning(
      `${this.#device.bdf} IRQ index ${this.index} vector ${vector}: ${error.message} (no 'error' listener)`,
      { type: 'VfioIrqWarning', code: 'VFIO_BRIDGE_IRQ_FAILED' },
    );
  }

  #trigger(given: EventFdLike | null | undefined, vector: number): EventFd | number | null {
    if (given === null) return null;
    if (given === undefined) {
      const e = EventFd.open();
      this.#owned.add(e);
      this.#watcher?.watch(vector, e);
      return e;
    }
    fdOf(given, `vector ${vector} eventfd`);
    this.#watcher?.watch(vector, given);
    return given;
  }

  /** Forgets `t` (vector `vector`), closing it if created here, unless it is `keep`. */
  #drop(t: EventFd | number | null, vector: number, keep: EventFd | number | null): void {
    if (t === null || t === keep) return;
    if (keep === null) this.#watcher?.unwatch(vector);
    else this.#watcher?.watch(vector, keep);
    if (t instanceof EventFd && this.#owned.has(t)) {
      this.#owned.delete(t);
      t.close();
    }
  }

  #setTriggers(start: number, list: (EventFd | number | null)[]): void {
    const fds = new Int32Array(list.length);
    for (const [i, t] of list.entries()) fds[i] = t === null ? -1 : typeof t === 'number' ? t : t.fd;
    this.#device.setIrqs(
      this.index,
      VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
      start,
      list.length,
      new Uint8Array(fds.buffer),
    );
  }

  #action(action: number, vector: number, what: string): void {
    this.#checkOpen();
    checkVector(vector, this.info.count - 1);
    try {
      this.#device.setIrqs(this.index, VFIO_IRQ_SET_DATA_NONE | action, vector, 1);
    } catch (e) {
      if (e instanceof VfioError && (e.code === 'ENOTTY' || e.code === 'EINVAL')) {
        throw new VfioError({
          message: `${what} of vector ${vector} at IRQ index ${this.index} of ${this.#device.bdf} failed: ${e.code}`,
          code: e.code,
          ...(e.errno !== undefined ? { errno: e.errno } : {}),
          op: 'VFIO_DEVICE_SET_IRQS',
          bdf: this.#device.bdf,
          hint: this.info.maskable
            ? 'the kernel refused the action for this vector'
            : 'the kernel cannot mask this index (irqInfo().maskable is false): emulate the mask, as lib/pci does for MSI and MSI-X',
        });
      }
      throw e;
    }
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new VfioError({
        message: `IRQ index ${this.index} of ${this.#device.bdf} is closed`,
        code: 'ECLOSED',
        op: 'VFIO_DEVICE_SET_IRQS',
        bdf: this.#device.bdf,
        hint: 'the object was closed; enable the index again',
      });
    }
  }
}

function i32(fd: number): Uint8Array {
  return new Uint8Array(Int32Array.of(fd).buffer);
}
