/**
 * vfio-bridge: the public entry point. Everything a VMM, a test or the CLI needs is exported here.
 */
export * from './memory';
export * from './vfio';
export * from './pci';
// lib/memory and lib/vfio both declare the same AccessSize (1 | 2 | 4 | 8); naming one settles the
// ambiguity between the two star exports.
export type { AccessSize } from './memory';
