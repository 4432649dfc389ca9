/**
 * Which bytes of a function's standard configuration space (the first 256) hold a register: the
 * header (0x00-0x3f) and the extent of each standard capability. A guest write anywhere else reaches
 * no register; the kernel's vfio-pci drops it, and lib/pci reports it (`config-unimplemented`),
 * since a driver that writes there is confused about the device it drives.
 *
 * Capability lengths are the PCI specifications' (the same facts the kernel's vfio-pci sizes its
 * permission map with). A capability whose length is not known here is taken to run to the next
 * capability, or to the end of the standard space, so nothing implemented is ever reported.
 */
import type { PciCapability } from './config';

const HEADER_END = 0x40;
const STANDARD_END = 0x100;

const CAP_PM = 0x01;
const CAP_VPD = 0x03;
const CAP_SLOTID = 0x04;
const CAP_MSI = 0x05;
const CAP_PCIX = 0x07;
const CAP_VNDR = 0x09;
const CAP_SSVID = 0x0d;
const CAP_EXP = 0x10;
const CAP_MSIX = 0x11;
const CAP_AF = 0x13;

const FIXED: ReadonlyMap<number, number> = new Map([
  [CAP_PM, 8],
  [CAP_VPD, 8],
  [CAP_SLOTID, 4],
  [CAP_SSVID, 8],
  [CAP_MSIX, 12],
  [CAP_AF, 6],
]);

/** The length of the capability at `cap`, or null when it is not known. */
function capLength(cap: PciCapability, read: (offset: number, size: 1 | 2) => number): number | null {
  const fixed = FIXED.get(cap.id);
  if (fixed !== undefined) return fixed;
  switch (cap.id) {
    case CAP_MSI: {
      const flags = read(cap.offset + 2, 2);
      return 10 + (flags & 0x80 ? 4 : 0) + (flags & 0x100 ? 10 : 0);
    }
    case CAP_VNDR:
      return read(cap.offset + 2, 1);
    case CAP_PCIX:
      return 8; // the bridge form is longer, and lib/pci passes through endpoints only
    case CAP_EXP:
      // Version 1 endpoints end after the link registers; version 2 adds the second set.
      return (read(cap.offset + 2, 2) & 0xf) >= 2 ? 0x3c : 0x14;
    default:
      return null;
  }
}

/**
 * implementedConfigBytes: a 256-entry map of the standard configuration space, true where a
 * register is (header, capability), read through `read` (the device's own configuration space).
 */
export function implementedConfigBytes(
  capabilities: readonly PciCapability[],
  read: (offset: number, size: 1 | 2) => number,
): Uint8Array {
  const map = new Uint8Array(STANDARD_END);
  map.fill(1, 0, HEADER_END);
  const std = capabilities.filter((c) => !c.extended).sort((a, b) => a.offset - b.offset);
  std.forEach((cap, i) => {
    const next = std[i + 1]?.offset ?? STANDARD_END;
    const len = capLength(cap, read) ?? next - cap.offset;
    map.fill(1, cap.offset, Math.min(STANDARD_END, cap.offset + Math.max(2, len)));
  });
  return map;
}
