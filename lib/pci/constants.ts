/**
 * PCI configuration-space offsets and bits used by the vfio-pci layer, as in linux/pci_regs.h.
 * VFIO's own numbers (region and IRQ indexes) live in lib/vfio/uapi.ts.
 */

/** Offset of the vendor ID word. */
export const PCI_VENDOR_ID = 0x00;
/** Offset of the device ID word. */
export const PCI_DEVICE_ID = 0x02;
/** Offset of the command word. */
export const PCI_COMMAND = 0x04;
/** Command bit: the device decodes its I/O BARs. */
export const PCI_COMMAND_IO = 0x1;
/** Command bit: the device decodes its memory BARs. */
export const PCI_COMMAND_MEMORY = 0x2;
/** Command bit: the device may master the bus (DMA, MSI). */
export const PCI_COMMAND_MASTER = 0x4;
/** Command bit: the device's INTx pin is disabled. */
export const PCI_COMMAND_INTX_DISABLE = 0x400;
/** Offset of the status word. */
export const PCI_STATUS = 0x06;
/** Status bit: a capability list is present at PCI_CAPABILITY_LIST. */
export const PCI_STATUS_CAP_LIST = 0x10;
/** Offset of the first base address register. */
export const PCI_BASE_ADDRESS_0 = 0x10;
/** Offset of the expansion ROM base address register (type 0 header). */
export const PCI_ROM_ADDRESS = 0x30;
/** ROM register bit that enables decoding of the ROM. */
export const PCI_ROM_ADDRESS_ENABLE = 0x1;
/** Offset of the capability list pointer. */
export const PCI_CAPABILITY_LIST = 0x34;
/** Size of conventional configuration space; extended capabilities start here. */
export const PCI_CONFIG_SPACE_SIZE = 0x100;
/** Capability ID of MSI-X. */
export const PCI_CAP_ID_MSIX = 0x11;
/** Power management capability, and its control/status register (PMCSR) offset. */
export const PCI_CAP_ID_PM = 0x01;
export const PCI_PM_CTRL = 4;
/** MSI-X capability: message control word. */
export const PCI_MSIX_FLAGS = 2;
/** MSI-X message control: table size minus one. */
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
/** MSI-X message control: function mask. */
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
/** MSI-X message control: MSI-X enable. */
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
/** MSI-X capability: table offset and BIR. */
export const PCI_MSIX_TABLE = 4;
/** MSI-X capability: PBA offset and BIR. */
export const PCI_MSIX_PBA = 8;
/** Low three bits of the table/PBA registers: the BAR indicator. */
export const PCI_MSIX_FLAGS_BIRMASK = 0x7;
/** Size of one MSI-X table entry. */
export const PCI_MSIX_ENTRY_SIZE = 16;
/** BAR register bit 0: this is an I/O BAR. */
export const PCI_BASE_ADDRESS_SPACE_IO = 0x1;
/** Memory BAR type field value for a 64-bit BAR. */
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4;
/** Memory BAR prefetchable bit. */
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8;

/** Number of standard BARs. */
export const PCI_NUM_BARS = 6;

/** The host page size every mmap and KVM memory slot is granular to. */
export const DEFAULT_PAGE_SIZE = 4096;

/** Offset of the interrupt pin byte (0: none, 1..4: INTA..INTD). */
export const PCI_INTERRUPT_PIN = 0x3d;
/** Capability ID of MSI. */
export const PCI_CAP_ID_MSI = 0x05;
/** MSI capability: message control word. */
export const PCI_MSI_FLAGS = 2;
/** MSI message control: MSI enable. */
export const PCI_MSI_FLAGS_ENABLE = 0x0001;
/** MSI message control: log2 of the vectors the device can send (multiple message capable). */
export const PCI_MSI_FLAGS_QMASK = 0x000e;
/** MSI message control: log2 of the vectors enabled (multiple message enable). */
export const PCI_MSI_FLAGS_QSIZE = 0x0070;
/** MSI message control: 64-bit addresses. */
export const PCI_MSI_FLAGS_64BIT = 0x0080;
/** MSI message control: per-vector masking. */
export const PCI_MSI_FLAGS_MASKBIT = 0x0100;
/** MSI capability: message address (low dword). */
export const PCI_MSI_ADDRESS_LO = 4;
