import { native, type NativeHandle } from '../native';
import { closedError } from './errors';

/**
 * An eventfd(2), non-blocking: what irqfd, ioeventfd and vfio interrupt triggers signal. Close it
 * with {@link EventFd.close} or `using`; it also closes when collected or when its thread exits.
 */
export class EventFd implements Disposable {
  readonly #handle: NativeHandle;
  #closed = false;

  constructor(initial = 0) {
    if (!Number.isInteger(initial) || initial < 0 || initial > 0xffffffff) {
      throw new RangeError(`eventfd initial value ${String(initial)} is not a 32-bit unsigned integer`);
    }
    this.#handle = native.eventfdOpen();
    if (initial > 0) native.eventfdWrite(native.fdOf(this.#handle), initial);
  }

  /** The fd number (-1 once closed). */
  get fd(): number {
    return this.#closed ? -1 : native.fdOf(this.#handle);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Read and reset the counter: how many signals since the last read (0n if none). */
  read(): bigint {
    if (this.#closed) throw closedError('eventfd read', 'eventfd', 'eventfd');
    return BigInt(native.eventfdRead(native.fdOf(this.#handle)));
  }

  /** Add `n` (default 1) to the counter: signal it. */
  signal(n = 1): void {
    if (this.#closed) throw closedError('eventfd write', 'eventfd', 'eventfd');
    native.eventfdWrite(native.fdOf(this.#handle), n);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.closeFd(this.#handle);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
