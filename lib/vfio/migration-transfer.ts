/**
 * Saving a device's whole state into a stream and loading one into a device, with the state changes
 * around them and what to do when they fail: a failed save puts the source back where it was (it
 * keeps running), a failed load resets the target (RESUMING is left only by a reset), and the error
 * says where the device ended up.
 */
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { AbortError } from '../base/error';
import { VfioError } from '../base/native-errors';
import type { DeviceMigration } from './migration';
import type { MigrationSession } from './migration-session';
import { MigrationError } from './migration-error';
import type { MigrationState } from './migration-uapi';

/** Options of {@link saveState}. */
export interface SaveOptions {
  /** Stream a PRE_COPY round while the device still runs first (when it offers PRE_COPY). */
  precopy?: boolean;
  /** Where to leave the device once its state is out (default STOP: stopped, as migration wants). */
  then?: MigrationState;
  /** Bytes per read of the data fd (default 1 MiB). */
  chunkSize?: number;
  /** End `dest` when the state is out (default true). */
  end?: boolean;
  /** Stops the save between two chunks of the state; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What {@link saveState} moved. */
export interface SaveResult {
  /** Bytes of state written to the destination. */
  readonly bytes: number;
  /** Of those, the bytes read in PRE_COPY while the device ran. */
  readonly precopyBytes: number;
  /** The device's STOP_COPY estimate before it stopped (VFIO_DEVICE_FEATURE_MIG_DATA_SIZE). */
  readonly dataSizeEstimate: bigint;
  /** Milliseconds the device was stopped for STOP_COPY (state change and data). */
  readonly stopCopyMs: number;
  /** Milliseconds for the whole save, pre-copy included. */
  readonly ms: number;
  /** Where the device was left. */
  readonly state: MigrationState;
}

/** Options of {@link loadState}. */
export interface LoadOptions {
  /** Where to leave the device once the state is loaded (default RUNNING). */
  then?: MigrationState;
  /** Bytes per write to the data fd at most (default 1 MiB). */
  chunkSize?: number;
  /** On failure, reset the device so it is usable again (default), or leave it as the kernel left it. */
  onFailure?: 'reset' | 'leave';
  /** Stops the load between two chunks of the state; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What {@link loadState} moved. */
export interface LoadResult {
  /** Bytes of state the device took. */
  readonly bytes: number;
  /** Milliseconds of RESUMING -> STOP: the device checking and taking in the state. */
  readonly commitMs: number;
  /** Milliseconds for the whole load. */
  readonly ms: number;
  /** Where the device was left (`then`, RUNNING by default). */
  readonly state: MigrationState;
}

/** Copies `reader` into `dest` without ending it, waiting for `dest` to drain. */
async function copyInto(reader: Readable, dest: Writable, signal?: AbortSignal): Promise<number> {
  let bytes = 0;
  for await (const chunk of reader as AsyncIterable<Buffer>) {
    signal?.throwIfAborted();
    bytes += chunk.length;
    if (!dest.write(chunk)) await once(dest, 'drain', signal ? { signal } : {});
  }
  return bytes;
}

function noSession(): MigrationError {
  return new MigrationError({
    message: 'the state change opened no data session',
    code: 'EPROTO',
    op: 'VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE',
    hint: 'the kernel returned no data fd where the uAPI says it returns one',
  });
}

function readerOf(session: MigrationSession | null, chunkSize: number | undefined): Readable {
  if (session === null) throw noSession();
  return session.reader(chunkSize !== undefined ? { chunkSize } : {});
}
/**
 * saveState: the device's state into `dest`: PRE_COPY first if asked (and offered), then STOP_COPY
 * to the end of the state, then `then` (STOP). On failure the device is returned to the state it
 * started in (a reset when that is refused) and the error says where it is.
 */
export async function saveState(
  m: DeviceMigration,
  dest: Writable,
  opts: SaveOptions = {},
): Promise<SaveResult> {
  opts.signal?.throwIfAborted();
  const t0 = performance.now();
  const origin = m.state;
  let precopyBytes = 0;
  let bytes = 0;
  let stopCopyMs = 0;
  let estimate = 0n;
  try {
    if (opts.precopy && m.flags().preCopy) {
      const step = await m.setStateAsync('PRE_COPY');
      precopyBytes = await copyInto(readerOf(step.session, opts.chunkSize), dest, opts.signal);
    }
    estimate = m.dataSize();
    const s0 = performance.now();
    const step = await m.setStateAsync('STOP_COPY');
    bytes =
      precopyBytes + (await copyInto(readerOf(step.session ?? m.session, opts.chunkSize), dest, opts.signal));
    await m.setStateAsync(opts.then ?? 'STOP');
    stopCopyMs = performance.now() - s0;
    if (opts.end !== false) {
      dest.end();
      if (!dest.writableFinished) await once(dest, 'finish');
    }
  } catch (e) {
    throw await recover(m, e, origin, `saving the state of ${m.device.bdf}`, 'restore');
  }
  return {
    bytes,
    precopyBytes,
    dataSizeEstimate: estimate,
    stopCopyMs,
    ms: performance.now() - t0,
    state: m.state,
  };
}

/**
 * loadState: a state saved from a compatible device into this one: RESUMING, the stream written
 * with backpressure, STOP (the device checks and takes it in), then `then` (RUNNING). On failure the
 * device is reset (unless `onFailure: 'leave'`) and the error says so: a refused stream (corrupted,
 * truncated, from another kind of device) is MigrationError `EMIGDATA`, the kernel's answer its cause.
 */
export async function loadState(
  m: DeviceMigration,
  src: Readable | AsyncIterable<Uint8Array>,
  opts: LoadOptions = {},
): Promise<LoadResult> {
  opts.signal?.throwIfAborted();
  const t0 = performance.now();
  const origin = m.state;
  let bytes = 0;
  let commitMs = 0;
  try {
    const step = await m.setStateAsync('RESUMING');
    if (step.session === null) throw noSession();
    const writer = step.session.writer(opts.chunkSize !== undefined ? { chunkSize: opts.chunkSize } : {});
    try {
      await pipeline(src, writer, opts.signal ? { signal: opts.signal } : {});
    } finally {
      bytes = writer.bytesWritten;
    }
    const c0 = performance.now();
    await m.setStateAsync('STOP');
    commitMs = performance.now() - c0;
    await m.setStateAsync(opts.then ?? 'RUNNING');
  } catch (e) {
    throw await recover(
      m,
      e,
      origin,
      `loading a state into ${m.device.bdf} (after ${bytes} bytes)`,
      opts.onFailure ?? 'reset',
    );
  }
  return { bytes, commitMs, ms: performance.now() - t0, state: m.state };
}

/** After a failed save or load: the device put back (or reset), and the error saying where it is. */
async function recover(
  m: DeviceMigration,
  e: unknown,
  origin: MigrationState,
  what: string,
  how: 'restore' | 'reset' | 'leave',
): Promise<unknown> {
  if (e instanceof VfioError && e.code === 'ECLOSED') return e;
  const done: string[] = [];
  let state: MigrationState | undefined;
  try {
    state = m.state;
  } catch {
    state = undefined;
  }
  if (how === 'restore' && state !== undefined && state !== origin) {
    try {
      await m.setStateAsync(origin);
      done.push(`returned to ${origin}`);
    } catch {
      how = 'reset';
    }
  }
  if (how === 'reset' && state !== 'RUNNING') {
    try {
      m.session?.close();
      await m.device.resetAsync();
      done.push('reset (VFIO_DEVICE_RESET): it runs again, with its own state');
    } catch (r) {
      done.push(`reset failed too (${r instanceof Error ? r.message : String(r)})`);
    }
  }
  try {
    state = m.state;
  } catch {
    state = undefined;
  }
  const cause = e instanceof Error ? e : new Error(String(e));
  const refused =
    /^loading/.test(what) &&
    e instanceof VfioError &&
    ['EFAULT', 'ENOMEM', 'EINVAL', 'EIO', 'EMIGDATA', 'EPROTO'].includes(e.code) &&
    (e instanceof MigrationError
      ? e.to === 'STOP' || e.op === 'write' || e.code === 'EMIGDATA'
      : e.op === 'write');
  const aborted =
    e instanceof Error && (e.name === 'AbortError' || (e as { code?: string }).code === 'ABORT_ERR');
  const after = `${done.length > 0 ? `the device was ${done.join(', then ')}; ` : ''}it is in ${state ?? 'an unknown state'}`;
  if (aborted) return new AbortError(`${what} (${after})`, cause);
  return new MigrationError({
    message: `${what} failed: ${cause.message}; ${after}`,
    code: refused ? 'EMIGDATA' : e instanceof VfioError ? e.code : 'EIO',
    ...(e instanceof VfioError && e.errno !== undefined ? { errno: e.errno } : {}),
    op: e instanceof VfioError ? e.op : 'migration',
    bdf: m.device.bdf,
    cause: e,
    ...(state !== undefined ? { state } : {}),
    hint:
      (e instanceof VfioError && e.hint ? `${e.hint}. ` : '') +
      (refused
        ? 'The stream was refused: check it was saved from a device of the same kind (same mdev type, same PCI IDs) and arrived whole'
        : 'See the cause'),
  });
}
