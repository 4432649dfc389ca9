/**
 * Argument checks shared by the memory model. Every message names the value, the width (where there
 * is one) and the limit, so that a failing call can be fixed from the message alone.
 */
import { checkValue } from '../base/checks';
import { ArgRangeError, ArgTypeError } from '../base/error';
import type { AccessLength, AccessSize, FixedWidthMemory } from './types';

/** Largest address, offset or size the model represents exactly. */
export const MAX_ADDRESS = Number.MAX_SAFE_INTEGER;

/** True for an exact integer in [0, MAX_ADDRESS]; false for NaN, fractions, negatives and non-numbers. */
export function isAddress(v: unknown): v is number {
  return typeof v === 'number' && v >= 0 && v <= MAX_ADDRESS && Math.floor(v) === v;
}

/** Throws unless `v` is an exact non-negative integer up to 2^53 - 1. */
export function checkAddress(what: string, v: unknown): number {
  if (typeof v !== 'number') {
    throw new ArgTypeError(`${what} must be a number, got ${typeof v}`);
  }
  if (!isAddress(v)) {
    throw new ArgRangeError(
      `${what} ${String(v)} is out of range: must be an integer in [0, ${MAX_ADDRESS}]`,
    );
  }
  return v;
}

/**
 * The end of the modelled address range: an access must end at or below it, so that every byte of
 * it has an exact address. A VMM routes guest accesses reaching past it as unassigned itself.
 */
export const ADDRESS_LIMIT = 2 ** 53;

/** Throws unless `size` is an integer from 1 to 8. */
export function checkAccessLength(size: unknown): AccessLength {
  if (typeof size !== 'number') {
    throw new ArgTypeError(`access size must be a number, got ${typeof size}`);
  }
  if (!(size >= 1 && size <= 8 && Math.floor(size) === size)) {
    throw new ArgRangeError(`access size ${String(size)} is invalid: must be an integer from 1 to 8`);
  }
  return size as AccessLength;
}

/**
 * Throws unless the access of `size` bytes at `addr` ends at or below 2^53. `2^53 - size` is exact,
 * unlike `addr + size`, which rounds above 2^53.
 */
export function checkAccessEnd(addr: number, size: number): void {
  if (addr > ADDRESS_LIMIT - size) {
    throw new ArgRangeError(
      `access of ${size} bytes at ${addr} is out of range: it must end at or below 2^53 (start at most ${ADDRESS_LIMIT - size})`,
    );
  }
}

/**
 * Throws unless `value` is a valid unsigned value of an access of `size` bytes (1 to 8): a `bigint`
 * for 7 and 8 bytes, a number otherwise.
 */
export function checkLengthValue(size: AccessLength, value: unknown): void {
  if (size === 1 || size === 2 || size === 4 || size === 8) return checkValue(size, value);
  if (size === 7) {
    if (typeof value !== 'bigint') {
      throw new ArgTypeError(`value of a 7-byte access must be a bigint, got ${typeof value}`);
    }
    if (BigInt.asUintN(56, value) !== value) {
      throw new ArgRangeError(`value ${value} does not fit in 7 bytes: must be in [0, 0xffffffffffffff]`);
    }
    return;
  }
  if (typeof value !== 'number') {
    throw new ArgTypeError(`value of a ${size}-byte access must be a number, got ${typeof value}`);
  }
  const limit = 2 ** (8 * size) - 1;
  if (!(value >= 0 && value <= limit && Math.floor(value) === value)) {
    throw new ArgRangeError(
      `value ${value} does not fit in ${size} bytes: must be an integer in [0, ${limit}]`,
    );
  }
}

/** Throws unless `size` is 1, 2, 4 or 8. */
export function checkAccessSize(size: unknown): AccessSize {
  if (size === 1 || size === 2 || size === 4 || size === 8) return size;
  if (typeof size !== 'number') {
    throw new ArgTypeError(`access size must be a number, got ${typeof size}`);
  }
  throw new ArgRangeError(`access size ${String(size)} is invalid: must be 1, 2, 4 or 8`);
}

/** Throws unless `p` is a signed 32-bit integer, as QEMU's priorities are. */
export function checkPriority(p: unknown): number {
  if (typeof p !== 'number') {
    throw new ArgTypeError(`priority must be a number, got ${typeof p}`);
  }
  if ((p | 0) !== p) {
    throw new ArgRangeError(
      `priority ${String(p)} is out of range: must be an integer in [-2147483648, 2147483647]`,
    );
  }
  return p;
}

// The value check of a 1-, 2-, 4- or 8-byte access is the package's one, in lib/base.
export { checkValue };

/** Formats an address the way QEMU prints a hwaddr: 16 lower-case hex digits. */
export function hex16(v: number): string {
  return v.toString(16).padStart(16, '0');
}

/** Throws unless a region's name is a string. */
export function checkRegionName(name: unknown): string {
  if (typeof name !== 'string') throw new ArgTypeError(`region name must be a string, got ${typeof name}`);
  return name;
}

/**
 * Throws unless `backing` is an ArrayBuffer or SharedArrayBuffer of at least `size` bytes. `from`
 * names where it came from when not given directly (`the backing factory of `).
 */
export function checkRamBacking(
  name: string,
  backing: unknown,
  size: number,
  from = '',
): asserts backing is ArrayBuffer | SharedArrayBuffer {
  const isBuffer =
    backing instanceof ArrayBuffer ||
    (typeof SharedArrayBuffer !== 'undefined' && backing instanceof SharedArrayBuffer);
  if (!isBuffer) {
    throw new ArgTypeError(
      from === ''
        ? `backing of ram region '${name}' must be an ArrayBuffer, a SharedArrayBuffer or a function returning one`
        : `${from}ram region '${name}' returned ${describe(backing)}: it must return an ArrayBuffer or SharedArrayBuffer`,
    );
  }
  if (backing.byteLength < size) {
    throw new ArgRangeError(
      from === ''
        ? `ram region '${name}' size ${size} exceeds its backing of ${backing.byteLength} bytes`
        : `${from}ram region '${name}' returned a buffer of ${backing.byteLength} bytes, fewer than the region's ${size}` +
            (backing.byteLength === 0 ? ' (a detached buffer: its memory was closed?)' : ''),
    );
  }
}

/** What a value is, for a message: its type, or its class for an object. */
function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v !== 'object') return typeof v;
  const ctor = (v as { constructor?: { name?: unknown } }).constructor;
  return typeof ctor?.name === 'string' ? `a ${ctor.name}` : 'an object';
}

const FIXED_WIDTH_METHODS = [
  'read8',
  'read16',
  'read32',
  'read64',
  'write8',
  'write16',
  'write32',
  'write64',
] as const;

/** Throws unless `memory` has every fixed-width accessor and at least `size` bytes. */
export function checkFixedWidthMemory(name: string, memory: FixedWidthMemory, size: number): void {
  if (memory === null || typeof memory !== 'object') {
    throw new ArgTypeError(`memory of ram-device region '${name}' must be a FixedWidthMemory`);
  }
  for (const m of FIXED_WIDTH_METHODS) {
    if (typeof memory[m] !== 'function') {
      throw new ArgTypeError(
        `memory of ram-device region '${name}' must be a FixedWidthMemory: it has no ${m}()`,
      );
    }
  }
  if (!(memory.length >= size)) {
    throw new ArgRangeError(
      `ram-device region '${name}' size ${size} exceeds its memory of ${memory.length} bytes`,
    );
  }
}

/**
 * Refuses an alias window that does not fit in its target (`{ name, size }`) when it is set. A
 * target that shrinks later simply clips the window, as in QEMU.
 */
export function checkAliasWindow(
  name: string,
  target: { readonly name: string; readonly size: number },
  offset: number,
  size: number,
): void {
  if (offset + size > target.size) {
    throw new ArgRangeError(
      `alias '${name}' window ${offset}+${size} exceeds its target '${target.name}' of ${target.size} bytes`,
    );
  }
}
