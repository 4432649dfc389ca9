/**
 * A migration data session: the data fd a state change returned, owned here until the device
 * leaves the session's states, with the streams over it (migration-stream.ts).
 */
import { ArgTypeError } from '../base/error';
import { native, type NativeHandle } from '../native';
import { MigrationError } from './migration-error';
import {
  type DataFdOwner,
  type DataStreamOptions,
  MigrationReader,
  MigrationWriter,
  precopyInfo,
} from './migration-stream';
import type { MigrationState, PrecopyInfo } from './migration-uapi';

/**
 * A migration data session: the data fd one state change returned, with its streams. It ends
 * (and its fd is closed) when the device leaves the session's states, or with close().
 */
export class MigrationSession implements DataFdOwner, Disposable {
  /** `save` (read the state out) or `resume` (write a state in). */
  readonly kind: 'save' | 'resume';
  readonly name: string;
  #handle: NativeHandle | null;
  #phase: 'precopy' | 'stop-copy' | 'resume';
  readonly #state: () => MigrationState | undefined;

  /** @internal Made by DeviceMigration when an arc hands back a data fd. */
  constructor(
    kind: 'save' | 'resume',
    to: MigrationState,
    handle: NativeHandle,
    name: string,
    state: () => MigrationState | undefined,
  ) {
    this.kind = kind;
    this.name = name;
    this.#handle = handle;
    this.#phase = kind === 'resume' ? 'resume' : to === 'STOP_COPY' ? 'stop-copy' : 'precopy';
    this.#state = state;
  }

  /** Where the save stands: `precopy` (a read of nothing is a pause) or `stop-copy` (the end). */
  get phase(): 'precopy' | 'stop-copy' | 'resume' {
    return this.#phase;
  }

  /** True once the session ended. */
  get closed(): boolean {
    return this.#handle === null;
  }

  /** The data fd (-1 once closed). */
  get fd(): number {
    return this.#handle === null ? -1 : native.fdOf(this.#handle);
  }

  /** @internal */
  handle(op: string): NativeHandle {
    if (this.#handle === null) {
      throw new MigrationError({
        message: `${op}: the migration data session of ${this.name} is over`,
        code: 'ECLOSED',
        op,
        hint: 'a session ends when the device leaves its states (STOP_COPY -> STOP, RESUMING -> STOP, PRE_COPY -> RUNNING) or with close(); start another with setState',
      });
    }
    return this.#handle;
  }

  /** @internal The pre-copy session went on into STOP_COPY. */
  _stopCopy(): void {
    this.#phase = 'stop-copy';
  }

  /** A Readable of the state (a save session). In PRE_COPY it ends when the device has nothing more for now. */
  reader(opts: DataStreamOptions = {}): MigrationReader {
    if (this.kind !== 'save')
      throw new ArgTypeError(`a ${this.kind} session is written, not read: use writer()`);
    this.handle('read');
    return new MigrationReader(this, opts);
  }

  /** A Writable into the device (a resume session). The state loads when the device goes to STOP. */
  writer(opts: DataStreamOptions = {}): MigrationWriter {
    if (this.kind !== 'resume')
      throw new ArgTypeError(`a ${this.kind} session is read, not written: use reader()`);
    this.handle('write');
    return new MigrationWriter(this, opts);
  }

  /** VFIO_MIG_GET_PRECOPY_INFO: what is left to read in PRE_COPY. */
  precopyInfo(): PrecopyInfo {
    return precopyInfo(this, this.#state);
  }

  /** Close the data fd. Idempotent. A stream still running fails with ECLOSED on its next call. */
  close(): void {
    if (this.#handle === null) return;
    const h = this.#handle;
    this.#handle = null;
    native.closeFd(h);
  }

  /** Same as {@link MigrationSession.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
