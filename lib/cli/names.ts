/** Names the CLI prints for VFIO region and IRQ indexes and PCI capability IDs. */

/** vfio-pci region indexes, and the names the command line accepts for them. */
export const REGION_NAMES = ['bar0', 'bar1', 'bar2', 'bar3', 'bar4', 'bar5', 'rom', 'config', 'vga'];

export const IRQ_NAMES = ['intx', 'msi', 'msix', 'err', 'req'];

const CAPS: Record<number, string> = {
  0x01: 'power-management',
  0x02: 'agp',
  0x03: 'vpd',
  0x04: 'slot-id',
  0x05: 'msi',
  0x06: 'hot-swap',
  0x07: 'pci-x',
  0x08: 'hypertransport',
  0x09: 'vendor-specific',
  0x0a: 'debug-port',
  0x0c: 'hot-plug',
  0x0d: 'bridge-subsystem-vendor',
  0x0e: 'agp3',
  0x0f: 'secure-device',
  0x10: 'pci-express',
  0x11: 'msi-x',
  0x12: 'sata',
  0x13: 'advanced-features',
  0x14: 'enhanced-allocation',
};

const EXT_CAPS: Record<number, string> = {
  0x01: 'advanced-error-reporting',
  0x02: 'virtual-channel',
  0x03: 'device-serial-number',
  0x04: 'power-budgeting',
  0x0b: 'vendor-specific-extended',
  0x0d: 'access-control-services',
  0x0e: 'alternative-routing-id',
  0x0f: 'address-translation-services',
  0x10: 'sr-iov',
  0x13: 'page-request',
  0x15: 'resizable-bar',
  0x17: 'tph-requester',
  0x18: 'latency-tolerance-reporting',
  0x19: 'secondary-pci-express',
  0x1b: 'pasid',
  0x1e: 'l1-pm-substates',
  0x1f: 'precision-time-measurement',
  0x23: 'designated-vendor-specific',
  0x25: 'data-link-feature',
  0x26: 'physical-layer-16gt',
};

/** A capability's name, or `cap-0xNN` when this table does not know it. */
export function capabilityName(id: number, extended: boolean): string {
  return (
    (extended ? EXT_CAPS : CAPS)[id] ??
    `${extended ? 'ext-cap' : 'cap'}-0x${id.toString(16).padStart(2, '0')}`
  );
}
