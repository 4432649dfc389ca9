/** Width of one access in bytes. 8-byte values are `bigint`, all others `number` (unsigned, LE). */
export type AccessSize = 1 | 2 | 4 | 8;
