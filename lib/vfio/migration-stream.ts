/**
 * The migration data fd as Node streams: a Readable of the device's state while saving, a Writable
 * into the device while resuming.
 *
 * Why not fs.createReadStream({ fd }) and fs.createWriteStream({ fd }): they would move the bytes,
 * but they get the data fd's protocol wrong. In PRE_COPY, read() answers ENOMSG (or 0) when the
 * device has nothing more for now: an fs stream ends there, or fails, and closes the fd, which
 * ends the save session the STOP_COPY that follows must continue on. Only in STOP_COPY does 0 mean
 * the end. They also close the fd whenever they end or fail (the session, not the stream, owns it),
 * read and write by fd number on the thread pool (a number this process may close and reuse
 * meanwhile), and report failures as bare fs errors where the device's refusal of the data needs
 * saying as such.
 *
 * Here each read() or write() runs on the libuv thread pool on a duplicate of the fd, one at a
 * time per stream; the Readable reads only when its buffer is below its high-water mark and the
 * Writable takes the next chunk only once the last is written, so memory holds at most a chunk or
 * two whatever the state's size. Short writes are finished. An error ends the stream with a
 * MigrationError saying what the device's errno means here.
 */
import { Readable, Writable } from 'node:stream';

import { native, type NativeHandle } from '../native';
import { VfioError } from '../base/native-errors';
import { MigrationError } from './migration-error';
import { decodePrecopyInfo, type MigrationState, type PrecopyInfo } from './migration-uapi';

/** Default size of one read() of the data fd. */
export const DEFAULT_CHUNK = 1 << 20;

/** What the stream needs of the session that owns the data fd. @internal */
export interface DataFdOwner {
  /** The data fd, or throws ECLOSED once the session ended. */
  handle(op: string): NativeHandle;
  /** The device's name, for messages. */
  readonly name: string;
  /** Whether reads now stream PRE_COPY (a temporary end) or STOP_COPY (the end). */
  readonly phase: 'precopy' | 'stop-copy' | 'resume';
}

/** Options of the streams. */
export interface DataStreamOptions {
  /** Bytes per read() (default 1 MiB); the Readable's high-water mark is the same. */
  chunkSize?: number;
}

const WRITE_HINTS: Record<string, string> = {
  EFAULT:
    'the device refused the data as it arrived: a stream saved from another kind of device, or a ' +
    'corrupted one (mtty answers EFAULT to a header it does not recognise)',
  ENOMEM:
    'more data than the device takes: a stream saved from another kind of device (or not a migration stream)',
  EINVAL: 'the device found the data inconsistent: a corrupted stream, or one from another kind of device',
  ENODEV: 'the session is over: the device left RESUMING (a reset, or a state change) while the stream ran',
};

const READ_HINTS: Record<string, string> = {
  ENODEV:
    'the session is over: the device left the saving state (a reset, or a state change) while the stream ran',
  EINVAL: 'the device has no data to give in its present state',
};

function streamError(e: unknown, owner: DataFdOwner, op: 'read' | 'write', at: number): unknown {
  if (!(e instanceof VfioError)) return e;
  const hints = op === 'write' ? WRITE_HINTS : READ_HINTS;
  const refused = op === 'write' && ['EFAULT', 'ENOMEM', 'EINVAL'].includes(e.code);
  return new MigrationError({
    message:
      op === 'write'
        ? `${owner.name} refused the migration data at byte ${at}: ${op} answered ${e.code}`
        : `reading ${owner.name}'s migration data failed at byte ${at}: ${e.code}`,
    code: e.code,
    ...(e.errno !== undefined ? { errno: e.errno } : {}),
    op,
    ...(e.path !== undefined ? { path: e.path } : {}),
    ...(e.bdf !== undefined ? { bdf: e.bdf } : {}),
    cause: e,
    hint:
      (hints[e.code] ?? `the device's answer to ${op}()`) +
      (refused ? '. The device is still RESUMING: only a reset (device.reset()) leaves it' : ''),
  });
}

/**
 * A Readable of the device's state from the save session's data fd. In PRE_COPY it ends where the
 * device has nothing more for now (ENOMSG, or a read of 0); in STOP_COPY at the end of the state.
 */
export class MigrationReader extends Readable {
  readonly #owner: DataFdOwner;
  readonly #chunk: number;
  #reading = false;
  #bytes = 0;
  /** True when the stream ended at PRE_COPY's temporary end rather than the state's end. */
  #caughtUp = false;

  /** @internal Made by MigrationSession.reader(). */
  constructor(owner: DataFdOwner, opts: DataStreamOptions = {}) {
    const chunk = checkChunk(opts.chunkSize);
    super({ highWaterMark: chunk });
    this.#owner = owner;
    this.#chunk = chunk;
  }

  /** Bytes read so far. */
  get bytesRead(): number {
    return this.#bytes;
  }

  /** True once the stream ended at PRE_COPY's temporary end: more may come later, or in STOP_COPY. */
  get caughtUp(): boolean {
    return this.#caughtUp;
  }

  /** One read() of the data fd, when the stream wants more (Node's stream machinery calls it). */
  override _read(): void {
    if (this.#reading) return;
    this.#reading = true;
    const phase = this.#owner.phase;
    let h: NativeHandle;
    try {
      h = this.#owner.handle('read');
    } catch (e) {
      this.destroy(e as Error);
      return;
    }
    native.migDataRead(h, this.#chunk).then(
      (buf) => {
        this.#reading = false;
        if (buf.length === 0) {
          this.#caughtUp = phase === 'precopy';
          this.push(null);
          return;
        }
        this.#bytes += buf.length;
        this.push(buf);
      },
      (e: unknown) => {
        this.#reading = false;
        if (phase === 'precopy' && e instanceof VfioError && e.code === 'ENOMSG') {
          this.#caughtUp = true;
          this.push(null); // nothing more for now: the device may have more later
          return;
        }
        this.destroy(streamError(e, this.#owner, 'read', this.#bytes) as Error);
      },
    );
  }
}

/** A Writable into the resume session's data fd. Finishing it does not load the state: STOP does. */
export class MigrationWriter extends Writable {
  readonly #owner: DataFdOwner;
  #bytes = 0;

  /** @internal Made by MigrationSession.writer(). */
  constructor(owner: DataFdOwner, opts: DataStreamOptions = {}) {
    super({ highWaterMark: checkChunk(opts.chunkSize), decodeStrings: true });
    this.#owner = owner;
  }

  /** Bytes the device has taken so far. */
  get bytesWritten(): number {
    return this.#bytes;
  }

  /** The chunk written whole, short writes finished (Node's stream machinery calls it). */
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#writeAll(chunk).then(
      () => callback(),
      (e: unknown) => callback(e as Error),
    );
  }

  async #writeAll(chunk: Buffer): Promise<void> {
    let at = 0;
    while (at < chunk.length) {
      const piece = at === 0 ? chunk : chunk.subarray(at);
      let n: number;
      try {
        n = await native.migDataWrite(this.#owner.handle('write'), piece);
      } catch (e) {
        throw streamError(e, this.#owner, 'write', this.#bytes);
      }
      if (n <= 0) {
        throw new MigrationError({
          message: `${this.#owner.name} took no byte of the migration data at byte ${this.#bytes}`,
          code: 'EMIGDATA',
          op: 'write',
          hint: 'the device stopped taking data: the stream is longer than the state it loads',
        });
      }
      at += n;
      this.#bytes += n;
    }
  }
}

function checkChunk(n: number | undefined): number {
  const v = n ?? DEFAULT_CHUNK;
  if (!Number.isInteger(v) || v < 1 || v > 64 << 20) {
    throw new RangeError(`chunkSize ${String(n)} is not an integer in [1, 64 MiB]`);
  }
  return v;
}

/** VFIO_MIG_GET_PRECOPY_INFO on the session's fd, with what EINVAL means there. */
export function precopyInfo(owner: DataFdOwner, state: () => MigrationState | undefined): PrecopyInfo {
  try {
    return decodePrecopyInfo(native.migPrecopyInfo(owner.handle('VFIO_MIG_GET_PRECOPY_INFO')));
  } catch (e) {
    if (!(e instanceof VfioError) || e.code !== 'EINVAL') throw e;
    const s = state();
    throw new MigrationError({
      message: `VFIO_MIG_GET_PRECOPY_INFO: ${owner.name} is in ${s ?? 'an unknown state'}, not PRE_COPY`,
      code: 'EINVAL',
      ...(e.errno !== undefined ? { errno: e.errno } : {}),
      op: 'VFIO_MIG_GET_PRECOPY_INFO',
      cause: e,
      ...(s !== undefined ? { state: s } : {}),
      hint: 'the sizes are only known in PRE_COPY and PRE_COPY_P2P; in STOP_COPY the data size (dataSize()) estimates what is left',
    });
  }
}
