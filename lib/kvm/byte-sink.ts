import { ArgTypeError } from '../base/error';
import { native, type NativeByteSink } from '../native';
import { closedError } from './errors';

/**
 * ByteSink: where vCPU threads put the bytes a guest writes to a port that only transmits them (a
 * UART's transmit holding register), so that such a write is served on the vCPU thread with no
 * JavaScript. An exit table's `sink` range points at one ({@link ExitTableEntry}).
 *
 * The vCPU thread appends each byte and goes back into the guest. The first byte after the sink
 * was last emptied calls `onBytes` once, on this thread's event loop; {@link ByteSink.take} then
 * returns every byte so far, in the order the guest wrote them (from any vCPU). A sink that is full
 * (64 KiB not yet taken) or closed refuses the byte: the vCPU thread hands that write to JavaScript
 * like any other, so its handler must take what is in the sink before it serves the write.
 */
export class ByteSink implements Disposable {
  readonly #handle: NativeByteSink;
  #closed = false;

  /** `onBytes`: called on the event loop when bytes arrive in an empty sink. */
  constructor(onBytes: () => void) {
    if (typeof onBytes !== 'function') throw new ArgTypeError('ByteSink: onBytes must be a function');
    this.#handle = native.byteSinkOpen(onBytes);
  }

  /** @internal The native sink, for the exit table. */
  get _handle(): NativeByteSink {
    if (this.#closed) throw closedError('ByteSink', 'byte sink', 'byte sink');
    return this.#handle;
  }

  /** Whether {@link ByteSink.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The bytes put in since the last take, oldest first; null when there are none (or closed). */
  take(): Uint8Array | null {
    if (this.#closed) return null;
    return native.byteSinkTake(this.#handle);
  }

  /**
   * Stop taking bytes in: vCPU threads hand later writes to JavaScript. Bytes not taken yet are
   * dropped; take them first. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.byteSinkClose(this.#handle);
  }

  /** Same as {@link ByteSink.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
