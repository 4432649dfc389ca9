import { ArgRangeError, ArgTypeError, closedError } from './error';
import { native, type NativeHandle } from '../native';

/**
 * An eventfd (non-blocking, close-on-exec) that this process owns: the trigger of an interrupt, the
 * resample fd of INTx, or anything a VMM hands to KVM_IRQFD. `fd` is the raw descriptor number;
 * it stays valid until {@link EventFd.close}.
 */
export class EventFd implements Disposable {
  readonly #handle: NativeHandle;
  #closed = false;

  private constructor(handle: NativeHandle) {
    this.#handle = handle;
  }

  /** A new eventfd with counter 0. */
  static open(): EventFd {
    return new EventFd(native.eventfdOpen());
  }

  /** The descriptor number (-1 once closed). */
  get fd(): number {
    return native.fdOf(this.#handle);
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Adds `value` (default 1) to the counter: what a device or a test does to signal it. */
  write(value = 1): void {
    checkCount(value);
    native.eventfdWrite(this.#open('eventfd write'), value);
  }

  /** Reads and resets the counter; 0 when nothing is pending. Never blocks. */
  read(): number {
    return native.eventfdRead(this.#open('eventfd read'));
  }

  /** Closes the fd. Idempotent; later use throws VfioError `'ECLOSED'`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.closeFd(this.#handle);
  }

  /** Same as {@link EventFd.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(op: string): number {
    if (this.#closed) throw closedError(op, 'the eventfd');
    return this.fd;
  }
}

function checkCount(value: unknown): void {
  if (typeof value !== 'number')
    throw new ArgTypeError(`eventfd value must be a number, got ${typeof value}`);
  if (!Number.isInteger(value) || value < 1 || value > 0xffff_ffff) {
    throw new ArgRangeError(`eventfd value ${value} is not an integer in [1, 2^32 - 1]`);
  }
}

/** Signals the eventfd `fd` by number (one write of `value`), e.g. one owned by another layer. */
export function eventfdSignal(fd: number, value = 1): void {
  checkFd(fd);
  checkCount(value);
  native.eventfdWrite(fd, value);
}

/** Throws unless `fd` is a plausible descriptor number. */
export function checkFd(fd: unknown, what = 'fd'): asserts fd is number {
  if (typeof fd !== 'number') throw new ArgTypeError(`${what} must be a number, got ${typeof fd}`);
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fff_ffff) {
    throw new ArgRangeError(`${what} ${fd} is not a file descriptor`);
  }
}
