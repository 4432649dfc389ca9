import type { FixedWidthMemory, MemoryRegion } from '../memory';
import {
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_BASE_ADDRESS_SPACE_IO,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_ROM_ADDRESS_ENABLE,
} from './constants';

/** Kind of a BAR as its register declares it. */
export type BarType = 'io' | 'mem32' | 'mem64';

/** Decoded low bits of a BAR register. */
export interface BarDecode {
  /** I/O, 32-bit or 64-bit memory. */
  readonly type: BarType;
  /** The prefetchable bit (bit 3) of a memory BAR; false for I/O. */
  readonly prefetchable: boolean;
  /** The read-only type bits the register always shows (bits 3:0 for memory, 1:0 for I/O). */
  readonly typeBits: number;
}

/**
 * decodeBarRegister: the type of a BAR from the low bits of its register.
 */
export function decodeBarRegister(reg: number): BarDecode {
  if (reg & PCI_BASE_ADDRESS_SPACE_IO) return { type: 'io', prefetchable: false, typeBits: reg & 0x3 };
  const mem64 = (reg & 0x6) === PCI_BASE_ADDRESS_MEM_TYPE_64;
  return {
    type: mem64 ? 'mem64' : 'mem32',
    prefetchable: (reg & PCI_BASE_ADDRESS_MEM_PREFETCH) !== 0,
    typeBits: reg & 0xf,
  };
}

/** Inputs of {@link barAddress}. */
export interface BarAddressInput {
  /** The BAR's kind: I/O BARs decode with the command register's I/O bit, memory with its memory bit. */
  readonly type: BarType;
  /** True for the expansion ROM register, which also needs its enable bit (bit 0) set. */
  readonly rom?: boolean;
  /** Registered size of the BAR (a power of two). */
  readonly size: number;
  /** Low register value. */
  readonly lo: number;
  /** High register value (64-bit BARs only). */
  readonly hi?: number;
  /** Current command register. */
  readonly command: number;
  /** Size of the address space the BAR lives in; a BAR reaching past it is unmapped. */
  readonly limit: number;
}

/**
 * barAddress: where the guest has placed a BAR, or null when it is unmapped.
 *
 * Follows QEMU's pci_bar_address: decode must be enabled, address 0 and wrap-around mean unmapped,
 * a 32-bit BAR must end below 4 GiB, and a BAR that does not fit in the address space is unmapped.
 */
export function barAddress(i: BarAddressInput): number | null {
  const size = BigInt(i.size);
  if (i.type === 'io') {
    if (!(i.command & PCI_COMMAND_IO)) return null;
  } else {
    if (!(i.command & PCI_COMMAND_MEMORY)) return null;
    if (i.rom && !(i.lo & PCI_ROM_ADDRESS_ENABLE)) return null;
  }
  let raw = BigInt(i.lo >>> 0);
  if (i.type === 'mem64') raw |= BigInt((i.hi ?? 0) >>> 0) << 32n;
  const addr = raw & ~(size - 1n);
  const last = addr + size - 1n;
  if (addr === 0n || last <= addr) return null;
  if (i.type !== 'mem64' && last >= 0xffff_ffffn) return null;
  if (last >= BigInt(i.limit) || last > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return Number(addr);
}

/** One mmap'ed area of a BAR. */
export interface BarMmap {
  /** Position of the area in the BAR's list of mmap areas (the `i` of `mmaps[i]`). */
  readonly index: number;
  /** Offset of the area inside the BAR. */
  readonly offset: number;
  /** Size of the area as the kernel reports it (the region may be expanded beyond it). */
  readonly size: number;
  /** The `"<BDF> BAR n mmaps[i]"` ram-device region over the mapping. */
  readonly region: MemoryRegion;
  /** The mapping itself; it may span a whole page when a sub-page BAR was mapped for expansion. */
  readonly memory: FixedWidthMemory & {
    /** Unmap it. */
    close(): void;
  };
}

/** A BAR as the guest sees it and as the PCI layer has built it. */
export interface PciBar {
  /** BAR number, 0 to 5. */
  readonly index: number;
  /** I/O, 32-bit or 64-bit memory, as the device's register declares it. */
  readonly type: BarType;
  /** The prefetchable bit of the device's register. */
  readonly prefetchable: boolean;
  /** Registered size: what sizing reports to the guest (relocation may make it larger than the region). */
  readonly size: number;
  /** Size of the device's VFIO region (0 for a BAR that exists only to hold relocated MSI-X). */
  readonly regionSize: number;
  /** Guest address, or null when unmapped. */
  readonly address: number | null;
  /** True while a sub-page BAR is expanded to a full page. */
  readonly expanded: boolean;
  /** True for a sub-page BAR whose whole page is mapped, so it can be expanded. */
  readonly expandable: boolean;
  /** The "<BDF> base BAR n" region placed in the PCI address space (a handler-less I/O region). */
  readonly base: MemoryRegion;
  /** The "<BDF> BAR n" region served by pread/pwrite, or null for a virtual BAR. */
  readonly region: MemoryRegion | null;
  /** The mmapped areas; empty for an I/O BAR, an unmappable region, `noMmap`, or a failed mmap. */
  readonly mmaps: readonly BarMmap[];
  /** Names of the quirk overlays installed in this BAR. */
  readonly quirks: readonly string[];
  /** Why the BAR could not be mmapped, when an mmap failed and accesses fall back to the fd. */
  readonly mmapError: Error | null;
}
