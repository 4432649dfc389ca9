/**
 * Interrupts a test waits for: one IRQ index enabled through Device.enableIrq, its interrupts
 * counted per vector, and promises for the next one. Ask for the next interrupt before starting
 * what raises it (or wait for a count with {@link InterruptWaiter.waitForCount}): an interrupt that
 * came first is counted, not awaited.
 */
import { EventEmitter } from 'node:events';

import { ArgRangeError, VfioBridgeError } from '../base/error';
import type { IrqOptions } from '../vfio/irq';
import { checkTimeout, timeoutError, type WaitOptions } from './waits';

/** What enables interrupts: lib/vfio's Device, or a fake. */
export interface IrqSource {
  /** PCI address of the device, for messages. */
  readonly bdf: string;
  /** Enables IRQ index `index` as lib/vfio's `Device.enableIrq` does. */
  enableIrq(index: number, opts: IrqOptions): IrqEvents;
}

/** What the waiter needs of an enabled index: lib/vfio's DeviceIrq, or a fake. */
export interface IrqEvents {
  /** How many vectors were enabled. */
  readonly vectors: number;
  /** Disables the index. */
  close(): void;
  /** DeviceIrq's `interrupt` (vector, count) and `error` (error, vector) events. */
  on(event: 'interrupt', listener: (vector: number, count: number) => void): unknown;
  on(event: 'error', listener: (error: Error, vector: number) => void): unknown;
}

const INDEX_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];

/**
 * InterruptWaiter: counts the interrupts of one IRQ index. Emits `'interrupt'` (vector, count), and
 * `'error'` (error, vector) to its listeners when a watched eventfd fails, which also rejects every
 * wait, pending or later, with that error; close() disables the index.
 */
export class InterruptWaiter extends EventEmitter implements Disposable {
  /** The VFIO IRQ index enabled: 0 INTx, 1 MSI, 2 MSI-X, 3 ERR, 4 REQ. */
  readonly index: number;
  /** PCI address of the device, for messages. */
  readonly bdf: string;
  readonly #irq: IrqEvents;
  readonly #counts: number[];
  #closed = false;
  #failed: Error | undefined;

  /** Enable `index` on `device` with `vectors` vectors (default 1), delivered here. */
  constructor(device: IrqSource, index: number, opts: { vectors?: number } = {}) {
    super();
    this.index = index;
    this.bdf = device.bdf;
    this.#counts = [];
    this.#irq = device.enableIrq(index, { vectors: opts.vectors ?? 1 });
    this.#irq.on('error', (error, vector) => {
      // Waits reject with it; an 'error' listener hears it too (without one, emit would throw here).
      this.#failed ??= error;
      this.emit('failed', error, vector);
      if (this.listenerCount('error') > 0) this.emit('error', error, vector);
    });
    this.#irq.on('interrupt', (vector, count) => {
      this.#counts[vector] = (this.#counts[vector] ?? 0) + count;
      this.emit('interrupt', vector, this.#counts[vector]);
    });
    for (let v = 0; v < this.#irq.vectors; v++) this.#counts[v] = 0;
  }

  /** The number of vectors enabled. */
  get vectors(): number {
    return this.#irq.vectors;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Interrupts counted on `vector` so far (eventfd counts add up: a coalesced pair counts 2). */
  count(vector = 0): number {
    this.#checkVector(vector);
    return this.#counts[vector];
  }

  /** The next interrupt on `vector` after this call; resolves with the vector's count then. */
  next(vector = 0, opts: WaitOptions = {}): Promise<number> {
    this.#checkVector(vector);
    return this.waitForCount(vector, this.#counts[vector] + 1, opts);
  }

  /**
   * waitForCount: until `vector` has counted at least `n` interrupts.
   * @throws VfioBridgeError ETIMEDOUT naming the device, index, vector and the count reached
   */
  waitForCount(vector: number, n: number, opts: WaitOptions = {}): Promise<number> {
    this.#checkVector(vector);
    const timeoutMs = checkTimeout(opts.timeoutMs);
    const signal = opts.signal;
    if (this.#counts[vector] >= n) return Promise.resolve(this.#counts[vector]);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (this.#closed) return Promise.reject(this.#closedError());
    const what = `interrupt ${n} on ${INDEX_NAMES[this.index] ?? `IRQ index ${this.index}`} vector ${vector} of ${this.bdf}`;
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.off('interrupt', onInterrupt);
        this.off('close', onClose);
        this.off('failed', onFailed);
      };
      const onFailed = (error: Error): void => {
        done();
        reject(error);
      };
      const onInterrupt = (v: number, count: number): void => {
        if (v !== vector || count < n) return;
        done();
        resolve(count);
      };
      const onAbort = (): void => {
        done();
        reject(signal!.reason);
      };
      const onClose = (): void => {
        done();
        reject(this.#closedError());
      };
      const timer = setTimeout(() => {
        done();
        reject(timeoutError(what, timeoutMs, `${this.#counts[vector]} interrupt(s)`));
      }, timeoutMs);
      this.on('interrupt', onInterrupt);
      this.once('close', onClose);
      this.once('failed', onFailed);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Disable the index; pending waits reject with ECLOSED. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#irq.close();
    } finally {
      this.emit('close');
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #checkVector(vector: number): void {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.#counts.length) {
      throw new ArgRangeError(`vector ${vector} is not in [0, ${this.#counts.length - 1}]`);
    }
  }

  #closedError(): VfioBridgeError {
    return new VfioBridgeError({
      message: `the interrupts of IRQ index ${this.index} of ${this.bdf} were closed while awaited`,
      code: 'ECLOSED',
    });
  }
}
