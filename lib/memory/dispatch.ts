/**
 * Accesses into one terminal region: the validity rules and size adjustment of I/O regions (QEMU's
 * memory_region_access_valid and access_with_adjusted_size), and the aligned pieces an access that
 * crosses ranges is cut into.
 */
import { ArgTypeError } from '../base/error';
import { allOnes } from '../base/values';
import type { MemoryRegion } from './region';
import type { AccessSize } from './types';

/** Why an access was not delivered to a region. */
export type UnassignedReason =
  'unassigned' | 'rejected' | 'unaligned' | 'invalid-size' | 'readonly' | 'fault';

/** All-ones value of each access size, as a guest reads from nothing (lib/base's allOnes). */
export const ones = allOnes;

/** Why the device would refuse this access, or null if it accepts it. */
export function ioInvalidReason(
  r: MemoryRegion,
  off: number,
  size: AccessSize,
  isWrite: boolean,
): UnassignedReason | null {
  if (r._accepts !== null && !r._accepts(off, size, isWrite)) return 'rejected';
  // `&` keeps the low 32 bits of any safe integer, which is all an alignment test needs.
  if (!r._validUnaligned && (off & (size - 1)) !== 0) return 'unaligned';
  if (size > r._validMax || size < r._validMin) return 'invalid-size';
  return null;
}

function implSize(r: MemoryRegion, size: number): number {
  const s = size < r._implMax ? size : r._implMax;
  return s < r._implMin ? r._implMin : s;
}

/** Checks and masks what a read callback returned to `size` bytes. */
function normalize(r: MemoryRegion, v: unknown, size: number): number | bigint {
  if (size === 8) {
    if (typeof v !== 'bigint') {
      throw new ArgTypeError(
        `read callback of region '${r.name}' returned ${typeof v} for an 8-byte read; expected a bigint`,
      );
    }
    return BigInt.asUintN(64, v);
  }
  if (typeof v !== 'number') {
    throw new ArgTypeError(
      `read callback of region '${r.name}' returned ${typeof v} for a ${size}-byte read; expected a number`,
    );
  }
  return size === 4 ? v >>> 0 : size === 2 ? v & 0xffff : v & 0xff;
}

function truncate(v: number | bigint, size: number): number {
  if (typeof v === 'bigint') return Number(BigInt.asUintN(size * 8, v));
  return size === 4 ? v >>> 0 : size === 2 ? v & 0xffff : v & 0xff;
}

/**
 * Reads through an io region's callback with impl-sized accesses: a wider access is split into
 * consecutive impl-sized ones combined little-endian, a narrower one is widened to impl.min and
 * truncated, as QEMU's access_with_adjusted_size does.
 */
export function ioRead(r: MemoryRegion, off: number, size: AccessSize): number | bigint {
  const ops = r._ops!;
  const acc = implSize(r, size);
  if (acc === size) return normalize(r, ops.read(off, size), size);
  if (acc > size) return truncate(normalize(r, ops.read(off, acc as AccessSize), acc), size);
  if (size === 8) {
    let v = 0n;
    for (let i = 0; i < 8; i += acc) {
      v |= BigInt(normalize(r, ops.read(off + i, acc as AccessSize), acc)) << BigInt(i * 8);
    }
    return v;
  }
  let v = 0;
  for (let i = 0; i < size; i += acc) {
    v += (normalize(r, ops.read(off + i, acc as AccessSize), acc) as number) * 2 ** (i * 8);
  }
  return v;
}

/** Writes through an io region's callback with impl-sized accesses (see {@link ioRead}). */
export function ioWrite(r: MemoryRegion, off: number, size: AccessSize, value: number | bigint): void {
  const ops = r._ops!;
  const acc = implSize(r, size);
  if (acc === size) {
    ops.write(off, size, value);
  } else if (acc > size) {
    // A narrow write to a wide-only implementation carries zeros in the upper bytes, as in QEMU.
    ops.write(off, acc as AccessSize, acc === 8 ? BigInt(value) : value);
  } else if (size === 8) {
    const v = value as bigint;
    const mask = (1n << BigInt(acc * 8)) - 1n;
    for (let i = 0; i < 8; i += acc) {
      ops.write(off + i, acc as AccessSize, Number((v >> BigInt(i * 8)) & mask));
    }
  } else {
    const v = value as number;
    const mask = acc === 2 ? 0xffff : 0xff;
    for (let i = 0; i < size; i += acc) ops.write(off + i, acc as AccessSize, (v >>> (i * 8)) & mask);
  }
}

/**
 * Largest power of two up to `max` (what the region accepts) that fits in `remaining` bytes and
 * divides `at`, as QEMU's memory_access_size picks each piece of address_space_rw.
 */
export function pieceSize(at: number, remaining: number, max: number = 8): AccessSize {
  if (max >= 8 && remaining >= 8 && at % 8 === 0) return 8;
  if (max >= 4 && remaining >= 4 && at % 4 === 0) return 4;
  if (max >= 2 && remaining >= 2 && at % 2 === 0) return 2;
  return 1;
}

/**
 * Whether an access of 1, 2, 4 or 8 bytes inside one io region must be cut into pieces first:
 * wider than the region takes, or misaligned where it takes no misaligned access. QEMU's
 * address_space_rw cuts these (memory_access_size) before the region judges each piece, so a
 * misaligned 4-byte MMIO exit reaches a device that takes 2-byte accesses as two of them.
 */
export function needsSplit(r: MemoryRegion, off: number, size: AccessSize): boolean {
  return size > r._validMax || (!r._validUnaligned && (off & (size - 1)) !== 0);
}

/** The widest piece a region takes: an io region's `valid.maxAccessSize`, 8 for memory. */
export function widestPiece(r: MemoryRegion): number {
  return r._ops !== null ? r._validMax : 8;
}
