/**
 * The memory model: QEMU's region tree, transactions, flat views, dispatch, listeners and
 * `info mtree` rendering, in pure TypeScript.
 */
export type {
  AccessLength,
  AccessSize,
  AccessConstraints,
  FixedWidthMemory,
  MemoryRegionOps,
  RegionKind,
} from './types';
export { MemoryTopologyError, type MemoryTopologyErrorCode } from './types';
export { MemoryRegion } from './region';
export type { RamBuffer, RamBufferFactory } from './ram-backing';
export { BufferMemory } from './buffer-memory';
export { beginTransaction, commitTransaction, transaction, transactionDepth } from './transaction';
export { FlatView, type FlatRange } from './flat-view';
export type { UnassignedReason } from './unassigned';
export {
  AddressSpace,
  type AddressSpaceEvents,
  type AddressSpaceOptions,
  type MemoryListener,
  type UnassignedAccess,
} from './address-space';
export {
  renderMtree,
  mtreeJson,
  mtreeType,
  type MtreeOptions,
  type MtreeNodeJson,
  type MtreeFlatJson,
} from './mtree';
// The one channel every layer reports a guest's mistakes on (lib/base; re-exported here, where the
// address spaces that report unassigned accesses live, so vfio-bridge/memory has it without the addon).
export {
  GuestErrorSink,
  type GuestError,
  type GuestErrorAction,
  type GuestErrorEvents,
  type GuestErrorSinkOptions,
  type GuestErrorSource,
} from '../base/guest-error';
