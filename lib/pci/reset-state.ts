/**
 * The device as the guest first sees it. QEMU resets an assigned device before the guest runs: its
 * vfio_pci_pre_reset turns off I/O and memory decode and bus mastering and clears INTx Disable, on the
 * device itself, and the guest finds its BARs unplaced. Without that, the host's live command
 * register (decode on) would make BAR writes take effect before the guest ever enabled decode, and
 * a device left mastering by its last user would keep doing DMA.
 */
import {
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
} from './constants';

/** Command register bits that are clear when the guest first reads the device. */
export const RESET_CLEARED_COMMAND =
  PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE;

/** resetCommand: the command register the guest first sees, from the device's live one. */
export function resetCommand(live: number): number {
  return live & ~RESET_CLEARED_COMMAND & 0xffff;
}
