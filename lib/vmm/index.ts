/**
 * lib/vmm: the pieces of a PC-like machine a Node VMM assembles on top of lib/kvm, each pure data
 * or a device model with no KVM in it, so each is unit-tested on its own:
 * - `Uart16550` at 0x3f8 (the guest console, captured and streamed, with its IRQ line);
 * - `PciRootBus`: configuration mechanism #1 at 0xcf8/0xcfc routing config cycles to
 *   `VfioPciDevice`s, with a host bridge of its own and the reset control register at 0xcf9;
 * - `placeBars`: BAR placement as firmware does it;
 * - `I8042ResetPort`: the keyboard controller's reset line; `CmosRtc`: the clock at 0x70/0x71;
 * - `writeMpTable`, `pciIntxGsi`, `defaultIrqchipRoutes` (lib/kvm's): the guest's interrupt
 *   routing (an MP table; mptable.ts says why not ACPI);
 * - `loadLinux`, `pcE820`, `writeBootCpuState`, `setupBootVcpu`, `guestCpuid`: Linux's x86 boot
 *   protocol for a bzImage and the vCPU it starts on, written into guest RAM through `BootRam`
 *   windows of exactly the bytes each piece takes;
 * - `PcMachine`: all of it assembled on lib/kvm, lib/dma and lib/pci into a PC that boots Linux
 *   with passed-through devices.
 */
export * from './errors';
export * from './uart';
export * from './pci-root-bus';
export * from './bar-placement';
export * from './i8042';
export * from './cmos-rtc';
export * from './intx';
export * from './mptable';
export * from './boot/bzimage';
export * from './boot/e820';
export * from './boot/boot-ram';
export * from './boot/cpu-state';
export * from './boot/load-linux';
export * from './boot/vcpu-setup';
export * from './cpuid';
export { Machine, type MachineEvents, type MachineOptions, type RamRange } from './machine';
export * from './pc-machine';
export { ExitTableListener, exitEntryOf, type VfioDeviceLookup } from './exit-table-listener';
export {
  PciMsiRouting,
  type MsiRoutingDevice,
  type MsiRoutingTarget,
  type PciMsiRoutingOptions,
} from './irq/pci-msi';
export {
  PciIntxRouting,
  type IntxRoutingDevice,
  type IntxRoutingTarget,
  type PciIntxRoutingOptions,
} from './irq/pci-intx';
export { vfioPciSlotClassifier } from './slot-classifier';
