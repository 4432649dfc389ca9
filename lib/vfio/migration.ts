/**
 * Device migration, version 2, on an open VFIO device: what the device offers
 * (VFIO_DEVICE_FEATURE_MIGRATION), its state, moving it to another state along the arcs the kernel
 * takes (checked before the ioctl by migration-path.ts), the data session a state change opens
 * (its fd as Node streams, migration-stream.ts), the STOP_COPY data size and PRE_COPY's sizes.
 * Saving and loading a whole state with recovery are migration-transfer.ts's.
 */
import { ArgTypeError, closedError } from '../base/error';
import { VfioError } from '../base/native-errors';
import { native, type NativeHandle } from '../native';
import { Device } from './device';
import { MigrationError } from './migration-error';
import { findMigrationPath, type MigrationArc, type MigrationPath } from './migration-path';
import { MigrationSession } from './migration-session';
import {
  decodeMigrationFlags,
  MIG_DATA_SIZE_SIZE,
  MIG_STATE,
  MIG_STATE_SIZE,
  MIGRATION_FEATURE_SIZE,
  type MigrationFlags,
  type MigrationState,
  readU64,
  stateName,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_MIGRATION,
} from './migration-uapi';
import { viewOf } from '../base/values';

const OP_STATE = 'VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE';

/** One arc crossed, and how long its request took. */
export interface TimedArc extends MigrationArc {
  /** How long its VFIO_DEVICE_FEATURE request took, in milliseconds. */
  readonly ms: number;
}

/** What {@link DeviceMigration.setState} did. */
export interface MigrationStep {
  /** The state the device was in before the step. */
  readonly from: MigrationState;
  /** The state the step asked for, where the device now is. */
  readonly to: MigrationState;
  /** The path the kernel took. */
  readonly path: MigrationPath;
  /** The requests made: one for the whole path, or one per arc with `stepwise`. */
  readonly requests:
    | readonly TimedArc[]
    | readonly {
        /** The state the request left. */
        from: MigrationState;
        /** The state the request asked for (the step's `to`: one request for the whole path). */
        to: MigrationState;
        /** How long the request took, in milliseconds. */
        ms: number;
      }[];
  /** The session the step opened, or the one it continues (PRE_COPY -> STOP_COPY); null when none. */
  readonly session: MigrationSession | null;
  /** Milliseconds for the whole step. */
  readonly ms: number;
}

/** Options of {@link DeviceMigration.setState}. */
export interface SetStateOptions {
  /** One request per arc, each timed (default: one request, the kernel walks the path). */
  stepwise?: boolean;
}

/**
 * Migration of one open VFIO device. Every state change is checked against the path the kernel
 * takes for the device's flags before any ioctl; a change that fails reads the state back and
 * says where the device is.
 */
export class DeviceMigration {
  /** The open VFIO device migrated; its migration stays usable while the device is open. */
  readonly device: Device;
  #flags: MigrationFlags | null = null;
  #session: MigrationSession | null = null;

  /**
   * `device` is a lib/vfio Device, or what holds one: a VfioPciDevice opened by BDF or by mdev
   * UUID (its `device`).
   */
  constructor(device: Device | { readonly device: object }) {
    const d = device instanceof Device ? device : (device as { device?: unknown } | null)?.device;
    if (!(d instanceof Device)) {
      throw new ArgTypeError(
        'DeviceMigration needs an open lib/vfio Device, or a VfioPciDevice built on one',
      );
    }
    this.device = d;
  }

  #h(op: string): NativeHandle {
    if (this.device.closed) throw closedError(op, `device ${this.device.bdf}`, this.device.bdf);
    return this.device._handle;
  }

  /**
   * VFIO_DEVICE_FEATURE_MIGRATION: what the device offers. Cached.
   * @throws MigrationError ENOMIGRATION when the device offers no migration
   */
  flags(): MigrationFlags {
    if (this.#flags !== null) return this.#flags;
    const op = 'VFIO_DEVICE_FEATURE_MIGRATION';
    let raw: Buffer;
    try {
      raw = native.vfioDeviceFeature(
        this.#h(op),
        VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION,
        undefined,
        MIGRATION_FEATURE_SIZE,
      );
    } catch (e) {
      if (e instanceof VfioError && (e.code === 'ENOTTY' || e.code === 'EINVAL')) {
        throw new MigrationError({
          message: `${this.device.bdf} offers no migration (${op}: ${e.code})`,
          code: 'ENOMIGRATION',
          ...(e.errno !== undefined ? { errno: e.errno } : {}),
          op,
          bdf: this.device.bdf,
          cause: e,
          hint: 'its driver has no migration support (vfio-pci itself has none; variant drivers such as mlx5_vfio_pci and mdev drivers such as mtty do)',
        });
      }
      throw e;
    }
    this.#flags = decodeMigrationFlags(readU64(op, raw, 0));
    return this.#flags;
  }

  /** True when the device offers migration (flags() would not throw ENOMIGRATION). */
  get supported(): boolean {
    try {
      this.flags();
      return true;
    } catch (e) {
      if (e instanceof MigrationError && e.code === 'ENOMIGRATION') return false;
      throw e;
    }
  }

  /** VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE get: where the device is now. */
  get state(): MigrationState {
    const op = OP_STATE;
    this.flags();
    const raw = native.vfioDeviceFeature(
      this.#h(op),
      VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
      undefined,
      MIG_STATE_SIZE,
    );
    const n = viewOf(raw).getUint32(0, true);
    const s = stateName(n);
    if (s === undefined) {
      throw new MigrationError({
        message: `${op}: ${this.device.bdf} reports state ${n}, which this uAPI revision does not know`,
        code: 'EPROTO',
        op,
        bdf: this.device.bdf,
        hint: 'a newer kernel added a state: update vfio-bridge',
      });
    }
    return s;
  }

  /** The state, or undefined when it cannot be read (for error reports). */
  #stateOrUndefined(): MigrationState | undefined {
    try {
      return this.state;
    } catch {
      return undefined;
    }
  }

  /** VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: the estimated bytes STOP_COPY still has to stream. */
  dataSize(): bigint {
    const op = 'VFIO_DEVICE_FEATURE_MIG_DATA_SIZE';
    this.flags();
    const raw = native.vfioDeviceFeature(
      this.#h(op),
      VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
      undefined,
      MIG_DATA_SIZE_SIZE,
    );
    return readU64(op, raw, 0);
  }

  /** The data session open now (the last one a state change opened and did not end), or null. */
  get session(): MigrationSession | null {
    return this.#session?.closed === false ? this.#session : null;
  }

  /** The path the kernel would take from the current state to `to`; throws what setState would. */
  pathTo(to: MigrationState): MigrationPath {
    const f = this.flags();
    return findMigrationPath(f, this.state, to);
  }

  /**
   * Move the device to `to`. Refused before any ioctl when the kernel would refuse it (see
   * findMigrationPath). A failed request reads the state back: the MigrationError's `state` says
   * where the device is, and the session is ended when the device left its states.
   */
  setState(to: MigrationState, opts: SetStateOptions = {}): MigrationStep {
    const steps = this.#steps(to, opts);
    let step = steps.next();
    while (!step.done) {
      let result: [number, NativeHandle | null];
      try {
        result = native.vfioMigSetState(this.#h(OP_STATE), MIG_STATE[step.value]);
      } catch (e) {
        step = steps.throw(e);
        continue;
      }
      step = steps.next(result);
    }
    return step.value;
  }

  /** {@link DeviceMigration.setState} with the ioctls on the libuv thread pool. */
  async setStateAsync(to: MigrationState, opts: SetStateOptions = {}): Promise<MigrationStep> {
    const steps = this.#steps(to, opts);
    let step = steps.next();
    while (!step.done) {
      let result: [number, NativeHandle | null];
      try {
        result = await native.vfioMigSetStateAsync(this.#h(OP_STATE), MIG_STATE[step.value]);
      } catch (e) {
        step = steps.throw(e);
        continue;
      }
      step = steps.next(result);
    }
    return step.value;
  }

  /**
   * The requests of a state change, as a generator: it yields each state to ask for and takes the
   * kernel's answer (or the error, thrown in), so setState and setStateAsync do the same work.
   */
  *#steps(
    to: MigrationState,
    opts: SetStateOptions,
  ): Generator<MigrationState, MigrationStep, [number, NativeHandle | null]> {
    const t0 = performance.now();
    const path = this.pathTo(to);
    const targets = opts.stepwise ? path.arcs.map((a) => a.to) : path.states.length > 1 ? [to] : [];
    const requests: { from: MigrationState; to: MigrationState; ms: number }[] = [];
    let at = path.from;
    let session: MigrationSession | null = null;
    for (const target of targets) {
      const r0 = performance.now();
      let result: [number, NativeHandle | null];
      try {
        result = yield target;
      } catch (e) {
        throw this.#failed(e, path.from, at, target, to);
      }
      requests.push({ from: at, to: target, ms: performance.now() - r0 });
      session = this.#arrived(target, result[1]) ?? session;
      at = target;
    }
    if (session === null && path.arcs.at(-1)?.effect === 'continue') session = this.session;
    return {
      from: path.from,
      to,
      path,
      requests: opts.stepwise ? path.arcs.map((a, i) => ({ ...a, ms: requests[i]!.ms })) : requests,
      session,
      ms: performance.now() - t0,
    };
  }

  /** Bookkeeping after a request from `from` reached `to`: sessions opened, continued, ended. */
  #arrived(to: MigrationState, fd: NativeHandle | null): MigrationSession | null {
    const live = this.session;
    if (live !== null) {
      if (live.kind === 'save' && to === 'STOP_COPY' && live.phase === 'precopy') live._stopCopy();
      else if (!stillIn(live, to)) live.close();
    }
    if (fd === null) return null;
    this.#session?.close();
    const kind = to === 'RESUMING' ? 'resume' : 'save';
    this.#session = new MigrationSession(kind, to, fd, this.device.bdf, () => this.#stateOrUndefined());
    return this.#session;
  }

  /** A refused request: the state read back, the session ended if the device left its states. */
  #failed(
    e: unknown,
    origin: MigrationState,
    at: MigrationState,
    target: MigrationState,
    to: MigrationState,
  ): unknown {
    if (!(e instanceof VfioError) || e.code === 'ECLOSED') return e;
    const now = this.#stateOrUndefined();
    const live = this.session;
    if (live !== null && now !== undefined && !stillIn(live, now)) live.close();
    const where =
      now === undefined ? 'its state could not be read back' : `the device is now in ${now} (read back)`;
    let hint: string;
    if (now === 'ERROR')
      hint = 'only a reset (device.reset()) leaves ERROR; it returns the device to RUNNING';
    else if (now === 'RESUMING' && target !== 'RESUMING') {
      hint =
        'the device did not accept the state written to it (truncated, corrupted, or from another kind of ' +
        'device); RESUMING is left only to STOP, so reset the device (device.reset()) to abort it';
    } else hint = `the device stays where it is: ask for another state from ${now ?? 'there'}, or reset it`;
    return new MigrationError({
      message: `${e.op} ${at} -> ${target}${target !== to ? ` (on the way from ${origin} to ${to})` : ''} failed with ${e.code}; ${where}`,
      code: e.code,
      ...(e.errno !== undefined ? { errno: e.errno } : {}),
      op: e.op,
      ...(e.path !== undefined ? { path: e.path } : {}),
      bdf: this.device.bdf,
      cause: e,
      from: at,
      to: target,
      ...(now !== undefined ? { state: now } : {}),
      hint,
    });
  }
}

/** True while a session's fd still carries data in state `s`. */
function stillIn(session: MigrationSession, s: MigrationState): boolean {
  if (session.kind === 'resume') return s === 'RESUMING';
  return s === 'PRE_COPY' || s === 'PRE_COPY_P2P' || s === 'STOP_COPY';
}
