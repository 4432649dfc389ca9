/**
 * Waiting for hardware in a test: a register reaching a value, a DMA buffer's content. Each wait
 * has a timeout, after which it rejects with a VfioBridgeError `'ETIMEDOUT'` that names what was
 * awaited and the last value seen, and takes an AbortSignal, whose reason it rejects with.
 */
import { ArgRangeError, ArgTypeError, VfioBridgeError } from '../base/error';
import type { AccessSize } from '../types';

/** Options of every wait. */
export interface WaitOptions {
  /** How long to wait (default 5000 ms). */
  timeoutMs?: number;
  /** Aborts the wait: it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Options of the polling waits. */
export interface PollOptions extends WaitOptions {
  /** The first pause between reads (default 1 ms); it doubles up to `maxIntervalMs`. */
  intervalMs?: number;
  /** The longest pause between reads (default 50 ms). */
  maxIntervalMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 5000;

/** The ETIMEDOUT of every wait. */
export function timeoutError(what: string, timeoutMs: number, last: string | undefined): VfioBridgeError {
  return new VfioBridgeError({
    message:
      `timed out after ${timeoutMs} ms waiting for ${what}` +
      (last !== undefined ? ` (last seen: ${last})` : ''),
    code: 'ETIMEDOUT',
    hint: 'the device did not get there in time: check that it was started, or pass a longer timeoutMs',
  });
}

export function checkTimeout(timeoutMs: number | undefined): number {
  const t = timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof t !== 'number' || !(t >= 0) || !Number.isFinite(t)) {
    throw new ArgRangeError(`timeoutMs must be a finite number >= 0, got ${String(timeoutMs)}`);
  }
  return t;
}

/** A pause that an abort cuts short (rejecting with the signal's reason). */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * pollUntil: read with `read` until `done` accepts the value, pausing 1, 2, 4 ... up to 50 ms
 * between reads; resolves with the accepted value.
 * @throws VfioBridgeError ETIMEDOUT naming `what` and the last value (as `show` prints it)
 */
export function pollUntil<T>(
  what: string,
  read: () => T,
  done: (v: T) => boolean,
  show: (v: T) => string,
  opts: PollOptions = {},
): Promise<T> {
  // Bad arguments throw here, not as a rejection.
  return poll(what, read, done, show, checkTimeout(opts.timeoutMs), opts);
}

async function poll<T>(
  what: string,
  read: () => T,
  done: (v: T) => boolean,
  show: (v: T) => string,
  timeoutMs: number,
  opts: PollOptions,
): Promise<T> {
  const max = opts.maxIntervalMs ?? 50;
  let pause = Math.min(opts.intervalMs ?? 1, max);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    opts.signal?.throwIfAborted();
    const v = read();
    if (done(v)) return v;
    const left = deadline - Date.now();
    if (left <= 0) throw timeoutError(what, timeoutMs, show(v));
    await sleep(Math.min(pause, left), opts.signal);
    pause = Math.min(pause * 2, max);
  }
}

/** Something registers are read from: a BAR `Mapping`, or `{ device, region }` read with pread. */
export type RegisterSource =
  | {
      /** One load of `size` bytes at `offset` (a Mapping's read). */
      read(offset: number, size: AccessSize): number | bigint;
    }
  | {
      /** The device registers are read from with pread (a lib/vfio Device). */
      device: {
        /** One pread of `size` bytes at `offset` in region `region`. */
        read(region: number, offset: number, size: AccessSize): number | bigint;
      };
      /** The VFIO region index to read, e.g. a BAR's number. */
      region: number;
    };

/** What {@link waitForRegister} waits for: `(read & mask) === value`. */
export interface RegisterWait extends PollOptions {
  /** The access width (default 4). */
  size?: AccessSize;
  /** Bits compared (default all). */
  mask?: number | bigint;
  /** A name for the message, e.g. `edu status`. */
  name?: string;
}

const hexOf = (v: number | bigint): string => `0x${v.toString(16)}`;

/**
 * waitForRegister: poll the register at `offset` until `(value & mask) === want`; resolves with the
 * full value read last.
 * @throws VfioBridgeError ETIMEDOUT naming the register, the mask, the wanted and the last value
 */
export function waitForRegister(
  source: RegisterSource,
  offset: number,
  want: number | bigint,
  opts: RegisterWait = {},
): Promise<number | bigint> {
  const size = opts.size ?? 4;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new ArgRangeError(`offset ${offset} is not >= 0`);
  if (
    source === null ||
    typeof source !== 'object' ||
    !('device' in source || typeof source.read === 'function')
  ) {
    throw new ArgTypeError('source must be a Mapping or { device, region }');
  }
  const read =
    'device' in source
      ? () => source.device.read(source.region, offset, size)
      : () => source.read(offset, size);
  const big = (v: number | bigint): bigint => (typeof v === 'bigint' ? v : BigInt(v >>> 0));
  const mask = opts.mask === undefined ? (1n << BigInt(8 * size)) - 1n : big(opts.mask);
  const target = big(want);
  const where = 'device' in source ? ` of region ${source.region}` : '';
  const what =
    `${opts.name ?? 'register'} at ${hexOf(offset)}${where}` +
    (opts.mask === undefined ? ` to read ${hexOf(target)}` : ` & ${hexOf(mask)} to read ${hexOf(target)}`);
  return pollUntil(
    what,
    read,
    (v) => (big(v) & mask) === target,
    (v) => hexOf(v),
    opts,
  );
}

/** Bytes a DMA wait reads: a buffer, a view, or a test DMA buffer (anything with `bytes`). */
export type ByteSource =
  | ArrayBuffer
  | ArrayBufferView
  | {
      /** The bytes to compare, e.g. a {@link TestDmaBuffer}'s. */
      readonly bytes: Uint8Array;
    };

function bytesOf(src: ByteSource): Uint8Array {
  if (src instanceof ArrayBuffer) return new Uint8Array(src);
  if (ArrayBuffer.isView(src)) return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  if (src && src.bytes instanceof Uint8Array) return src.bytes;
  throw new ArgTypeError('expected an ArrayBuffer, a typed array or a DMA buffer');
}

/** At most 16 bytes in hex, with an ellipsis beyond. */
function showBytes(b: Uint8Array, from = 0): string {
  const part = Buffer.from(b.buffer, b.byteOffset + from, Math.min(16, b.length - from)).toString('hex');
  return (from > 0 ? `[${from}] ` : '') + part + (b.length - from > 16 ? '...' : '');
}

/**
 * waitForBytes: poll `src` until it starts with `expected` (bytes) or `predicate` accepts it.
 * Resolves with the bytes (the live view, not a copy).
 * @throws VfioBridgeError ETIMEDOUT with the first differing offset and what was there
 */
export function waitForBytes(
  src: ByteSource,
  expected: Uint8Array | ((bytes: Uint8Array) => boolean),
  opts: PollOptions & { name?: string } = {},
): Promise<Uint8Array> {
  const bytes = bytesOf(src);
  const name = opts.name ?? 'DMA buffer';
  if (typeof expected === 'function') {
    return pollUntil(
      `${name} to satisfy ${expected.name || 'the predicate'}`,
      () => bytes,
      expected,
      showBytes,
      opts,
    );
  }
  if (!(expected instanceof Uint8Array))
    throw new ArgTypeError('expected must be a Uint8Array or a function');
  if (expected.length > bytes.length) {
    throw new ArgRangeError(`${expected.length} expected bytes exceed the ${bytes.length}-byte buffer`);
  }
  const firstDiff = (): number => expected.findIndex((v, i) => bytes[i] !== v);
  return pollUntil(
    `${name} to hold ${expected.length} bytes ${showBytes(expected)}`,
    () => bytes,
    () => firstDiff() < 0,
    (b) => showBytes(b, Math.max(0, firstDiff())),
    opts,
  );
}
