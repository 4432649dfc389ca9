/**
 * Small value helpers every layer prints or answers with: hex for messages, the all-ones value
 * a guest reads from nothing, and a DataView on the bytes of a kernel structure.
 */

/** `v` as 0x-prefixed lower-case hex, the way every message of the package prints a number. */
export function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}

/**
 * The all-ones value of a `size`-byte access (1 to 8), as a guest reads it from nothing: a number
 * up to 6 bytes, a bigint from 7 (past 2^53).
 */
export function allOnes(size: number): number | bigint {
  if (size >= 7) return (1n << BigInt(8 * size)) - 1n;
  return size === 4 ? 0xffffffff : 2 ** (8 * size) - 1;
}

/** {@link allOnes} of an access of at most 4 bytes (port I/O, configuration space), as a number. */
export function allOnes32(size: number): number {
  return size === 4 ? 0xffffffff : 2 ** (8 * size) - 1;
}

/**
 * A DataView on exactly `b`'s bytes (a Buffer may be a window of a larger pool). Its getters and
 * setters are single built-ins, where Buffer's readUInt32LE and friends are JavaScript functions of
 * a dozen steps each: a table of 80 CPUID leaves decoded with those took 11 ms of the event loop
 * under the lab's TCG, where a VMM's first boot runs them uncompiled.
 */
export function viewOf(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
