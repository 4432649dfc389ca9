/** lib/kvm: the KVM a passthrough VMM needs (VM, memory slots, vCPUs, irqchip, irqfd, KVM-VFIO). */
export { Kvm, PASSTHROUGH_CAPS, type KvmOpenOptions } from './kvm';
export { Vm, type Assignment, type HasFd, type IoeventfdOptions, type IrqfdOptions } from './vm';
export { Vcpu, type RunOptions, type RunResult, type VcpuOptions } from './vcpu';
export { type AccessExit, type VcpuExit } from './exit';
export { routeAccess, type ExitRouting, type RoutedAccess } from './exit-routing';
export { ExitTable, type ExitSpace, type ExitTableEntry } from './exit-table';
export { ByteSink } from './byte-sink';
export {
  VcpuThread,
  type ParkReason,
  type VcpuThreadFault,
  type VcpuThreadHandlers,
  type VcpuThreadStats,
} from './vcpu-thread';
export { SlotTable, type MemorySlot, type QueuedSlot, type SlotSpec, type SlotTarget } from './slots';
export type { HostMemory } from '../base/host-memory';
export {
  KvmMemoryListener,
  type KvmMemoryListenerOptions,
  type SlotClassifier,
  type SlotPiece,
} from './memory-listener';
export {
  KVM_API_VERSION,
  KVM_CAP,
  KVM_EXIT,
  type DescriptorTable,
  type GsiRoute,
  type KvmCapName,
  type Regs,
  type Segment,
  type Sregs,
} from './uapi';
export { GSI_TABLE, MsiRoutes, type MsiMessage, type MsiRoutesOptions } from './msi-routes';
export { defaultIrqchipRoutes } from './irqchip-routes';
export {
  CPUID_FLAG_SIGNIFICANT_INDEX,
  LAPIC_STATE_SIZE,
  decodeCpuid,
  encodeCpuid,
  type CpuidEntry,
} from './x86';
export { VcpuSet, type VcpuSetEnd, type VcpuSetOptions, type VcpuSetRunOptions } from './vcpu-set';
