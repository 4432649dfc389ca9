/**
 * Helpers for hardware-in-the-loop tests of code that drives PCI devices through vfio-bridge (the
 * `vfio-bridge/testing` entry point): devices by role, acquired and released with a check that the
 * test left them idle, DMA buffers in the device's IOMMU space, and waits for interrupts, registers
 * and DMA, for jest and node:test.
 */
export {
  deviceConfig,
  parseDeviceList,
  parseSelector,
  resolveRole,
  type DeviceConfig,
  type DeviceSelector,
  type RoleOptions,
  type RoleResolution,
} from './roles';
export {
  acquire,
  devicesRequired,
  probeDevice,
  tryAcquire,
  type Acquired,
  type AcquireOptions,
  type ProbedDevice,
} from './acquire';
export { TestDevice, type ReleaseOptions } from './test-device';
export { leftBusyFindings, LeftBusyError, type ConfigRead, type LeftBusyFinding } from './left-busy';
export { DEFAULT_IOVA_BASE, TestDmaBuffer, type DmaBufferOptions } from './dma-buffer';
export { InterruptWaiter, type IrqEvents, type IrqSource } from './interrupts';
export {
  DEFAULT_TIMEOUT_MS,
  pollUntil,
  waitForBytes,
  waitForRegister,
  type ByteSource,
  type PollOptions,
  type RegisterSource,
  type RegisterWait,
  type WaitOptions,
} from './waits';
export { describeDevice, useDevice, type DeviceSuiteOptions, type DeviceUse } from './describe-device';
export { framework, type Framework, type FrameworkName } from './frameworks';
