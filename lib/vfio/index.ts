/**
 * lib/vfio: the VFIO device API on either IOMMU backend (the container/group uAPI with type1, or
 * iommufd with device cdevs), DMA mapping with one exact record, and fixed-width mappings.
 */
export type { AccessSize } from '../types';
export { VfioError, type VfioErrorInit } from '../base/native-errors';
export { Mapping, memfd, PAGE_SIZE, type BlockArray, type MappingOptions } from './mapping';
export { Container, type IommuType, type ContainerIommuInfo } from './container';
export {
  DMA_HANDLE,
  type DmaBackend,
  type DmaIommuInfo,
  type DmaMapRequest,
  type DmaMapping,
  type DmaMemory,
  type VfioBackendKind,
} from './dma-types';
export { Iommufd } from './iommufd';
export type { IommufdHandle } from './iommufd-handle';
export { Ioas, Hwpt, type HwptOptions, type IoasIommuInfo } from './ioas';
export {
  cdevOf,
  findCdev,
  kernelHasCdevs,
  openCdevDevice,
  openCdevDeviceAsync,
  type CdevOptions,
  type DeviceCdev,
  type NoCdevReason,
} from './cdev';
export {
  BACKEND_CHOICES,
  checkBackendChoice,
  chooseBackend,
  type BackendDecision,
  type BackendProbeOptions,
  type VfioBackendChoice,
} from './backend';
export {
  backendOf,
  IommufdBackend,
  openBackend,
  openBackendAsync,
  Type1Backend,
  type BackendDevice,
  type BackendOpenOptions,
  type OpenBackendOptions,
  type VfioBackend,
} from './vfio-backend';
export {
  IOMMUFD_IOCTLS,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HW_INFO_TYPE_NONE,
  type IoasIovaRanges,
  type IommuHwInfo,
} from './iommufd-uapi';
export { Group, normalizeDeviceName, openGroup, type GroupOptions, type GroupStatus } from './group';
export { EventFd, eventfdSignal } from '../base/eventfd';
export {
  DeviceIrq,
  type DeviceIrqEvents,
  IrqWatcher,
  type EventFdLike,
  type IrqDevice,
  type IrqHandler,
  type IrqOptions,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
} from './irq';
export { parseHotResetInfo, type HotResetDevice, type HotResetInfo } from './hot-reset';
export { Device } from './device';
export type { IovaRange } from './uapi';
export { normalizeBdf, type GroupMember, type SysfsOptions } from './sysfs';
export {
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_BAR1_REGION_INDEX,
  VFIO_PCI_BAR2_REGION_INDEX,
  VFIO_PCI_BAR3_REGION_INDEX,
  VFIO_PCI_BAR4_REGION_INDEX,
  VFIO_PCI_BAR5_REGION_INDEX,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
  type DeviceInfo,
  type RegionInfo,
  type RegionCap,
  type IrqInfo,
  type IommuInfo,
  type IommuCap,
} from './uapi';
// Mediated devices and device migration (lib/vfio/mdev, lib/vfio/migration*.ts).
export * from './mdev';
export { MigrationSession } from './migration-session';
export { DeviceMigration, type MigrationStep, type SetStateOptions, type TimedArc } from './migration';
export { MigrationError, type MigrationErrorInit } from './migration-error';
export { DmaLogging, type DmaLogRange } from './dma-logging';
export {
  arcTour,
  findMigrationPath,
  migrationArcs,
  offeredStates,
  type ArcEffect,
  type MigrationArc,
  type MigrationFeatureFlags,
  type MigrationPath,
} from './migration-path';
export {
  MigrationReader,
  MigrationWriter,
  type DataFdOwner,
  type DataStreamOptions,
} from './migration-stream';
export {
  loadState,
  saveState,
  type LoadOptions,
  type LoadResult,
  type SaveOptions,
  type SaveResult,
} from './migration-transfer';
export {
  decodeMigrationFlags,
  isMigrationState,
  MIG_STATE,
  MIGRATION_STATES,
  type MigrationFlags,
  type MigrationState,
  type PrecopyInfo,
} from './migration-uapi';
