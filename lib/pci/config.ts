import { PCI_CAPABILITY_LIST, PCI_CONFIG_SPACE_SIZE, PCI_STATUS, PCI_STATUS_CAP_LIST } from './constants';

/** One entry of a capability list. */
export interface PciCapability {
  /** Capability ID (standard) or extended capability ID. */
  readonly id: number;
  /** Offset of the capability's header in configuration space. */
  readonly offset: number;
  /** True for a PCIe extended capability (at 0x100 or above). */
  readonly extended: boolean;
}

/**
 * walkCapabilities: list the standard and, when the space is larger than 256 bytes, the extended
 * capabilities, reading through `read`.
 *
 * A malformed list (a pointer into the header, a loop) ends the walk rather than throwing, since
 * real devices ship such lists and the guest sees them the same way.
 */
export function walkCapabilities(
  read: (offset: number, size: 1 | 2 | 4) => number,
  configSize: number,
): PciCapability[] {
  const caps: PciCapability[] = [];
  if (read(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST) {
    const seen = new Set<number>();
    let pos = read(PCI_CAPABILITY_LIST, 1) & ~3;
    while (pos >= 0x40 && pos < PCI_CONFIG_SPACE_SIZE && !seen.has(pos)) {
      seen.add(pos);
      caps.push({ id: read(pos, 1), offset: pos, extended: false });
      pos = read(pos + 1, 1) & ~3;
    }
  }
  if (configSize > PCI_CONFIG_SPACE_SIZE) {
    const seen = new Set<number>();
    let pos = PCI_CONFIG_SPACE_SIZE;
    while (pos >= PCI_CONFIG_SPACE_SIZE && pos + 4 <= configSize && !seen.has(pos)) {
      seen.add(pos);
      const header = read(pos, 4) >>> 0;
      // An all-zero or all-ones header at 0x100 means no extended capabilities at all.
      if (header === 0 || header === 0xffffffff) break;
      caps.push({ id: header & 0xffff, offset: pos, extended: true });
      pos = (header >>> 20) & 0xffc;
    }
  }
  return caps;
}

/**
 * The emulated part of configuration space: per byte, which bits the PCI layer owns, their value,
 * and which of them the guest may write (QEMU's emulated_config_bits, config and wmask).
 * Bits not owned are read from and written to the device.
 */
export class EmulatedConfig {
  /** Bits the PCI layer answers for. */
  readonly bits: Uint8Array;
  /** Current value of the emulated bits. */
  readonly value: Uint8Array;
  /** Emulated bits the guest can change. */
  readonly wmask: Uint8Array;

  /** @param size Size of configuration space in bytes (256 or 4096); the length of each array. */
  constructor(readonly size: number) {
    this.bits = new Uint8Array(size);
    this.value = new Uint8Array(size);
    this.wmask = new Uint8Array(size);
  }

  /**
   * Emulates `mask` bits of the little-endian field at `offset`, setting them to `value` and
   * letting the guest write those of them in `wmask`.
   */
  emulate(offset: number, width: number, value: bigint, mask: bigint, wmask: bigint): void {
    for (let i = 0; i < width; i++) {
      const shift = BigInt(i * 8);
      const m = Number((mask >> shift) & 0xffn);
      const v = Number((value >> shift) & 0xffn);
      const w = Number((wmask >> shift) & 0xffn);
      this.bits[offset + i] |= m;
      this.value[offset + i] = (this.value[offset + i] & ~m) | (v & m);
      this.wmask[offset + i] = (this.wmask[offset + i] & ~m) | (w & m);
    }
  }

  /** The emulated-bits mask of `size` bytes at `offset`, little-endian. */
  maskAt(offset: number, size: number): number {
    let m = 0;
    for (let i = size - 1; i >= 0; i--) m = m * 256 + this.bits[offset + i];
    return m;
  }

  /** The emulated value of `size` bytes at `offset`, little-endian. */
  valueAt(offset: number, size: number): number {
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + this.value[offset + i];
    return v;
  }

  /** Applies a guest write to the emulated, writable bits. */
  write(offset: number, size: number, value: number): void {
    for (let i = 0; i < size; i++) {
      const b = Math.floor(value / 2 ** (8 * i)) & 0xff;
      const w = this.wmask[offset + i];
      this.value[offset + i] = (this.value[offset + i] & ~w) | (b & w);
    }
  }

  /** Reads a 32-bit little-endian emulated value, e.g. a BAR register. */
  long(offset: number): number {
    return this.valueAt(offset, 4) >>> 0;
  }
}

/** Merges emulated and physical bits the way a guest sees them. */
export function mergeBits(emuMask: number, emuValue: number, phys: number, size: number): number {
  if (size === 4) return ((emuValue & emuMask) | (phys & ~emuMask)) >>> 0;
  const all = 2 ** (size * 8) - 1;
  return ((emuValue & emuMask) | (phys & ~emuMask & all)) & all;
}
