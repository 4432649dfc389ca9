/**
 * Shared types of the memory model: access sizes, the fixed-width memory a ram-device region wraps,
 * the callbacks of an I/O region and the error raised for a misused topology.
 */

import type { AccessLength, AccessSize } from '../types';
import { VfioBridgeError } from '../base/error';

export type { AccessLength, AccessSize };

/**
 * Memory that is accessed only with loads and stores of one exact width. The native `Mapping` of a
 * VFIO region satisfies it structurally; tests and benchmarks use a JavaScript stand-in.
 */
export interface FixedWidthMemory {
  /** Size in bytes: every access must lie in [0, length). */
  readonly length: number;
  /** One 1-byte load at offset `o`. */
  read8(o: number): number;
  /** One 2-byte load at offset `o`. */
  read16(o: number): number;
  /** One 4-byte load at offset `o`. */
  read32(o: number): number;
  /** One 8-byte load at offset `o` (a bigint). */
  read64(o: number): bigint;
  /** One 1-byte store of `v` at offset `o`. */
  write8(o: number, v: number): void;
  /** One 2-byte store of `v` at offset `o`. */
  write16(o: number, v: number): void;
  /** One 4-byte store of `v` at offset `o`. */
  write32(o: number, v: number): void;
  /** One 8-byte store of `v` at offset `o`. */
  write64(o: number, v: bigint): void;
  /** Optional fast path for 64-bit reads without a bigint: fills `out[0]` (low) and `out[1]` (high). */
  read64Pair?(o: number, out: Uint32Array): void;
  /** Optional fast path for 64-bit writes without a bigint. */
  write64Pair?(o: number, lo: number, hi: number): void;
}

/**
 * Access constraints of an I/O region, as QEMU's `MemoryRegionOps.valid` and `.impl`.
 * `valid` is what the modelled device accepts (anything else is treated as an unassigned access);
 * `impl` is what the callbacks implement (anything else is split or widened to fit).
 */
export interface AccessConstraints {
  /** Smallest access in bytes. Default 1. */
  minAccessSize?: AccessSize;
  /** Largest access in bytes. Default 4. */
  maxAccessSize?: AccessSize;
  /** Whether accesses not aligned to their own size are allowed. Default false. */
  unaligned?: boolean;
}

/** Callbacks and constraints of an `io` region. Offsets are relative to the region. */
export interface MemoryRegionOps {
  /** Returns a `bigint` iff `size === 8`, otherwise an unsigned number of `size` bytes. */
  read(offset: number, size: AccessSize): number | bigint;
  /** `value` is a `bigint` iff `size === 8`. */
  write(offset: number, size: AccessSize, value: number | bigint): void;
  /** What the device accepts; other accesses are refused as unassigned. Default: 1 to 4 bytes, aligned. */
  valid?: AccessConstraints & {
    /** Last word on validity, consulted before the size and alignment rules. */
    accepts?(offset: number, size: AccessSize, isWrite: boolean): boolean;
  };
  /** What `read`/`write` handle; other sizes are split or widened to fit. Default: 1 to 4 bytes. */
  impl?: AccessConstraints;
}

/** The five region kinds. */
export type RegionKind = 'container' | 'io' | 'ram' | 'ram-device' | 'alias';

/** @internal Numeric kind codes, so the dispatch path compares small integers instead of strings. */
export const K_CONTAINER = 0;
/** @internal */
export const K_IO = 1;
/** @internal */
export const K_RAM = 2;
/** @internal */
export const K_RAM_DEVICE = 3;
/** @internal */
export const K_ALIAS = 4;

/** @internal */
export const KIND_CODES: Record<RegionKind, number> = {
  container: K_CONTAINER,
  io: K_IO,
  ram: K_RAM,
  'ram-device': K_RAM_DEVICE,
  alias: K_ALIAS,
};

/** Why a topology operation was refused. */
export type MemoryTopologyErrorCode =
  | 'already-attached'
  | 'cycle'
  | 'not-a-child'
  | 'not-a-container'
  | 'not-an-alias'
  | 'unbalanced-transaction'
  | 'reentrant-commit'
  | 'closed';

/**
 * A misuse of the region tree or of the transaction API: adding a region that already has a parent,
 * creating a cycle, removing a region that is not a child, committing without a transaction, or
 * using a closed address space. Bad numbers are `RangeError`s and wrong types `TypeError`s instead.
 */
export class MemoryTopologyError extends VfioBridgeError {
  /** `'MemoryTopologyError'`. */
  override readonly name: string = 'MemoryTopologyError';
  declare readonly code: MemoryTopologyErrorCode;
  constructor(code: MemoryTopologyErrorCode, message: string) {
    super({ code, message });
  }
}
