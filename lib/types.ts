/**
 * Width of one access in bytes, shared by every layer: a device register access, a mapping's load or
 * store, a guest access. 8-byte values are `bigint`, all others `number` (unsigned, little-endian).
 */
export type AccessSize = 1 | 2 | 4 | 8;
