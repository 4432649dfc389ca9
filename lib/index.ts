/**
 * vfio-bridge: the public entry point. Everything a VMM, a test or the CLI needs is exported here.
 */
export * from './memory';
export * from './vfio';
export * from './pci';
// Both layers declare the same AccessSize (1 | 2 | 4 | 8); name one so the star exports do not clash.
export type { AccessSize } from './memory';
