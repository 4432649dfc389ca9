/**
 * The VFIO device migration uAPI, version 2 (linux/vfio.h since 5.18, PRE_COPY and the data size
 * since 6.2/6.3): VFIO_DEVICE_FEATURE and the migration features, the device states, and the
 * structures the addon hands back as bytes. Defined here because the system headers vfio-bridge
 * builds against may predate them; the numbers are the kernel's and never change.
 */
import { VfioError } from '../base/native-errors';
import { viewOf } from '../base/values';

/** VFIO_DEVICE_FEATURE's flags: the feature index in the low 16 bits, then what to do with it. */
export const VFIO_DEVICE_FEATURE_MASK = 0xffff;
export const VFIO_DEVICE_FEATURE_GET = 1 << 16;
export const VFIO_DEVICE_FEATURE_SET = 1 << 17;
export const VFIO_DEVICE_FEATURE_PROBE = 1 << 18;

/** The feature indexes vfio-bridge uses. */
export const VFIO_DEVICE_FEATURE_MIGRATION = 1;
export const VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8;
export const VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9;

/** vfio_device_feature_migration.flags. */
export const VFIO_MIGRATION_STOP_COPY = 1 << 0;
export const VFIO_MIGRATION_P2P = 1 << 1;
export const VFIO_MIGRATION_PRE_COPY = 1 << 2;

/** enum vfio_device_mig_state, by name. */
export const MIG_STATE = {
  /** The device failed a transition and is unusable until it is reset; no arc leaves it. */
  ERROR: 0,
  /** Stopped: no DMA, no interrupts, no change of internal state. */
  STOP: 1,
  /** Running normally: the state of an unmigrated device. */
  RUNNING: 2,
  /** Stopped, and its state is read out through the data fd (the source's last step). */
  STOP_COPY: 3,
  /** Stopped, and a state is written in through the data fd (the destination's step). */
  RESUMING: 4,
  /** Running, but initiating no peer-to-peer DMA, so that several devices can be stopped in step. */
  RUNNING_P2P: 5,
  /** Running while its state is already read out through the data fd (pre-copy, optional). */
  PRE_COPY: 6,
  /** PRE_COPY without peer-to-peer DMA. */
  PRE_COPY_P2P: 7,
} as const;

/** A migration state by its uAPI name (`VFIO_DEVICE_STATE_<name>`). */
export type MigrationState = keyof typeof MIG_STATE;

/** Every state, in the kernel's numbering order. */
export const MIGRATION_STATES: readonly MigrationState[] = [
  'ERROR',
  'STOP',
  'RUNNING',
  'STOP_COPY',
  'RESUMING',
  'RUNNING_P2P',
  'PRE_COPY',
  'PRE_COPY_P2P',
];

/** The name of state number `n`, or undefined for a number this uAPI revision does not know. */
export function stateName(n: number): MigrationState | undefined {
  return MIGRATION_STATES[n];
}

/** True when `s` names a migration state. */
export function isMigrationState(s: unknown): s is MigrationState {
  return typeof s === 'string' && Object.hasOwn(MIG_STATE, s);
}

/** What VFIO_DEVICE_FEATURE_MIGRATION says a device can do, decoded. */
export interface MigrationFlags {
  /** STOP, STOP_COPY and RESUMING: saving and loading the state (always set when migration is offered). */
  readonly stopCopy: boolean;
  /** RUNNING_P2P (and PRE_COPY_P2P with preCopy): a quiescent state for peer-to-peer DMA. */
  readonly p2p: boolean;
  /** PRE_COPY (and PRE_COPY_P2P with p2p): saving while the device still runs. */
  readonly preCopy: boolean;
  /** The raw flags, bits this revision does not know included. */
  readonly raw: bigint;
}

/** Decodes vfio_device_feature_migration.flags. */
export function decodeMigrationFlags(raw: bigint): MigrationFlags {
  return {
    stopCopy: (raw & BigInt(VFIO_MIGRATION_STOP_COPY)) !== 0n,
    p2p: (raw & BigInt(VFIO_MIGRATION_P2P)) !== 0n,
    preCopy: (raw & BigInt(VFIO_MIGRATION_PRE_COPY)) !== 0n,
    raw,
  };
}

/** Encodes flags back to the uAPI's number (for tests and fakes). */
export function encodeMigrationFlags(f: Pick<MigrationFlags, 'stopCopy' | 'p2p' | 'preCopy'>): bigint {
  return BigInt(
    (f.stopCopy ? VFIO_MIGRATION_STOP_COPY : 0) |
      (f.p2p ? VFIO_MIGRATION_P2P : 0) |
      (f.preCopy ? VFIO_MIGRATION_PRE_COPY : 0),
  );
}

/** vfio_precopy_info, decoded: what is left to read in PRE_COPY. */
export interface PrecopyInfo {
  /** The initial data still to read; leave PRE_COPY for STOP_COPY once it is 0. */
  readonly initialBytes: bigint;
  /** State the device changed since it was read, still to read. */
  readonly dirtyBytes: bigint;
}

/** Sizes of the structures after VFIO_DEVICE_FEATURE's 8-byte header. */
export const MIGRATION_FEATURE_SIZE = 8; // vfio_device_feature_migration: u64 flags
export const MIG_STATE_SIZE = 8; // vfio_device_feature_mig_state: u32 device_state, s32 data_fd
export const MIG_DATA_SIZE_SIZE = 8; // vfio_device_feature_mig_data_size: u64 stop_copy_length
export const PRECOPY_INFO_SIZE = 24; // vfio_precopy_info: u32 argsz, u32 flags, u64 initial, u64 dirty

/** Reads one little-endian u64 at `at` of `buf`, checking the kernel returned that much. */
export function readU64(op: string, buf: Uint8Array, at: number): bigint {
  if (buf.length < at + 8) {
    throw new VfioError({
      message: `${op}: the kernel returned ${buf.length} bytes, fewer than the ${at + 8} the structure needs`,
      code: 'EPROTO',
      op,
    });
  }
  return viewOf(buf).getBigUint64(at, true);
}

/** Decodes vfio_precopy_info as the addon returns it (the whole structure, argsz first). */
export function decodePrecopyInfo(buf: Uint8Array): PrecopyInfo {
  return {
    initialBytes: readU64('VFIO_MIG_GET_PRECOPY_INFO', buf, 8),
    dirtyBytes: readU64('VFIO_MIG_GET_PRECOPY_INFO', buf, 16),
  };
}
