/**
 * vfio-bridge: the public entry point. Everything a VMM, a test or the CLI needs is exported here.
 */
export * from './memory';
export * from './vfio';
export * from './pci';
export * from './kvm';
export * from './dma';
export * from './vmm';
export {
  AbortError,
  ArgRangeError,
  ArgTypeError,
  KvmError,
  VfioBridgeError,
  type VfioBridgeErrorInit,
} from './base/error';
export { MEMORY_HANDLE, type HostMemory } from './base/host-memory';
