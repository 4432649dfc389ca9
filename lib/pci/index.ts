/**
 * lib/pci: vfio-pci devices for a Node VMM, with QEMU's per-BAR region stacks, MSI-X and quirk
 * overlays, sub-page BARs, BAR relocation, mapinfo and exit routing.
 */
export { DEFAULT_PAGE_SIZE } from './constants';
export * from './types';
export * from './config';
export * from './bar';
export * from './msix';
export * from './msi';
export * from './interrupt-types';
export * from './interrupts';
export * from './reset';
export * from './quirks';
export * from './report';
export * from './mapinfo';
export * from './system-address-spaces';
export * from './device';
export type { VfioPciDeviceOptions } from './build';
export type { OpenByBdfOptions } from './open';
export { type DumpAsyncOptions, type DumpOptions, formatDump } from './dump';
export type { MsixRelocation } from './msix-setup';
export type { PciRom } from './rom';
