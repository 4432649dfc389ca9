/** The argument checks every layer's public entry points share. */
import { ArgRangeError, ArgTypeError } from './error';
import type { AccessSize } from '../types';

/**
 * Throws an ArgTypeError unless `v` is a number, and an ArgRangeError unless it is a safe integer in
 * [0, `limit`]. `what` names the argument in the message.
 */
export function checkInteger(v: unknown, what: string, limit = Number.MAX_SAFE_INTEGER): asserts v is number {
  if (typeof v !== 'number') throw new ArgTypeError(`${what} must be a number, got ${typeof v}`);
  if (!Number.isSafeInteger(v) || v < 0 || v > limit) {
    throw new ArgRangeError(`${what} ${v} is not an integer in [0, ${limit}]`);
  }
}

/**
 * Throws an ArgTypeError unless `value` has the type an access of `size` bytes takes (a bigint for 8
 * bytes, a number otherwise), and an ArgRangeError unless it is an unsigned value that fits. `what`,
 * when given, names the access at the start of the message (`0000:00:03.0 config write at 0x4`).
 */
export function checkValue(
  size: AccessSize,
  value: unknown,
  what?: string,
): asserts value is number | bigint {
  const at = what === undefined ? '' : `${what}: `;
  if (size === 8) {
    if (typeof value !== 'bigint') {
      throw new ArgTypeError(`${at}value of an 8-byte access must be a bigint, got ${typeof value}`);
    }
    if (BigInt.asUintN(64, value) !== value) {
      throw new ArgRangeError(
        `${at}value ${value} does not fit in 8 bytes: must be in [0, 0xffffffffffffffff]`,
      );
    }
    return;
  }
  if (typeof value !== 'number') {
    throw new ArgTypeError(`${at}value of a ${size}-byte access must be a number, got ${typeof value}`);
  }
  // value >>> 0 is exact for the 4-byte case (no fraction, no sign, no more than 32 bits).
  const ok = size === 4 ? value >>> 0 === value : (value & (size === 1 ? 0xff : 0xffff)) === value;
  if (!ok) {
    const limit = size === 4 ? 0xffffffff : size === 1 ? 0xff : 0xffff;
    throw new ArgRangeError(
      `${at}value ${value} does not fit in ${size} bytes: must be an integer in [0, ${limit}]`,
    );
  }
}
