/**
 * Width of one access in bytes, shared by every layer: a device register access, a mapping's load or
 * store, a guest access. 8-byte values are `bigint`, all others `number` (unsigned, little-endian).
 */
export type AccessSize = 1 | 2 | 4 | 8;

/**
 * Length of one guest access in bytes (1 to 8), as KVM reports MMIO exits: an access that straddles
 * a page comes as two exits of odd lengths. Values of 7 and 8 bytes are `bigint`, all others
 * `number`, since 1 to 6 bytes always fit a number exactly.
 */
export type AccessLength = 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8;
