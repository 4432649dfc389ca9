/**
 * The error of device migration: a VfioError that also says which transition was asked for, where
 * the device is now (read back from the kernel after a failure), and, for a transition the kernel
 * will not take in one request, the requests that would get there.
 */
import { VfioError, type VfioErrorInit } from '../base/error';
import type { MigrationState } from './migration-uapi';

/** What a {@link MigrationError} is built from. */
export interface MigrationErrorInit extends VfioErrorInit {
  /** The state the device was in when the transition was asked for. */
  from?: MigrationState | undefined;
  /** The state asked for. */
  to?: MigrationState | undefined;
  /**
   * Where the device is after the failure, as VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE reads it back;
   * undefined when it could not be read (or nothing was tried).
   */
  state?: MigrationState | undefined;
  /** For a refused transition: the requests, in order, that would reach `to` (each a state to ask for). */
  requests?: readonly MigrationState[] | undefined;
}

/**
 * A refused or failed migration step. `code` is the kernel's errno name when an ioctl or the data
 * fd failed, or one of:
 * - `'EMIGSTATE'`: the device does not offer that state (its migration flags lack it);
 * - `'EMIGARC'`: the kernel takes no single transition from the current state to that one;
 *   `requests` lists the states to ask for in turn;
 * - `'EMIGERROR'`: the device is in ERROR, which only a reset leaves;
 * - `'ENOMIGRATION'`: the device offers no migration at all;
 * - `'EMIGDATA'`: the migration data was refused (a corrupted, truncated or foreign stream).
 */
export class MigrationError extends VfioError {
  override readonly name: string = 'MigrationError';
  /** The state the device was in when the transition was asked for; undefined when not known. */
  readonly from?: MigrationState;
  /** The state asked for; undefined for a failure that is not a transition (the data stream's). */
  readonly to?: MigrationState;
  /** Where the device is after the failure, read back from the kernel; undefined when it could not be read. */
  readonly state?: MigrationState;
  /** For a transition the kernel takes in no single request: the states to ask for in turn; else undefined. */
  readonly requests?: readonly MigrationState[];

  constructor(init: MigrationErrorInit) {
    super(init);
    if (init.from !== undefined) this.from = init.from;
    if (init.to !== undefined) this.to = init.to;
    if (init.state !== undefined) this.state = init.state;
    if (init.requests !== undefined) this.requests = init.requests;
  }
}
