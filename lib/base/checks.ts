/** The argument checks every layer's public entry points share. */
import { ArgRangeError, ArgTypeError } from './error';

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
