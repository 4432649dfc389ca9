import { ArgRangeError, ArgTypeError } from '../../base/error';
import { VmmError } from '../errors';
import { MPTABLE_START } from '../mptable';
import { viewOf } from '../../base/values';

/** e820 entry types. */
export const E820_RAM = 1;
/** Reserved: not RAM the kernel may use. */
export const E820_RESERVED = 2;
/** ACPI tables, reclaimable once read. */
export const E820_ACPI = 3;
/** ACPI non-volatile storage. */
export const E820_NVS = 4;
/** Memory with errors. */
export const E820_UNUSABLE = 5;
/** One of the e820 entry types above. */
export type E820Type =
  typeof E820_RAM | typeof E820_RESERVED | typeof E820_ACPI | typeof E820_NVS | typeof E820_UNUSABLE;

/** boot_params holds at most 128 entries (E820_MAX_ENTRIES_ZEROPAGE). */
export const E820_MAX_ENTRIES = 128;
/** Bytes per entry in boot_params: address, size (8 bytes each) and type (4). */
export const E820_ENTRY_SIZE = 20;

/** One range of the guest's physical memory map. */
export interface E820Entry {
  /** Guest-physical address where the range starts. */
  readonly addr: number;
  /** Length in bytes. */
  readonly size: number;
  /** What the range is, e.g. {@link E820_RAM} or {@link E820_RESERVED}. */
  readonly type: E820Type;
}

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;
/** Start of the legacy VGA hole. */
const VGA_START = 0xa0000;
/** The BIOS area Linux expects reserved. */
const BIOS_START = 0xf0000;
const HIGH_MEMORY = 0x100000;

/** Guest RAM of a PC: `ramSize` bytes, split around the PCI hole that starts at `pciHoleStart`. */
export interface PcMemoryLayout {
  /** Bytes of guest RAM (a multiple of 4 KiB, at least 2 MiB). */
  readonly ramSize: number;
  /**
   * Where RAM below 4 GiB stops and the PCI hole begins (default 0xc0000000, 3 GiB, where lib/dma's
   * Machine starts its hole).
   */
  readonly pciHoleStart?: number;
}

/** The guest-physical RAM ranges of a PC layout: below the hole, and the rest from 4 GiB. */
export function pcRamRanges(layout: PcMemoryLayout): {
  /** Guest-physical address: 0, or 4 GiB for the part above the hole. */
  addr: number;
  /** Length in bytes. */
  size: number;
}[] {
  const hole = layout.pciHoleStart ?? 0xc0000000;
  if (!Number.isSafeInteger(layout.ramSize) || layout.ramSize < 2 * MIB || layout.ramSize % 4096 !== 0) {
    throw new VmmError(
      'EE820',
      `guest RAM of ${String(layout.ramSize)} bytes must be a multiple of 4 KiB and at least 2 MiB`,
    );
  }
  if (!Number.isSafeInteger(hole) || hole < 2 * MIB || hole > 4 * GIB || hole % MIB !== 0) {
    throw new VmmError(
      'EE820',
      `the PCI hole start ${String(hole)} must be MiB-aligned, between 2 MiB and 4 GiB`,
    );
  }
  const low = Math.min(layout.ramSize, hole);
  const out = [{ addr: 0, size: low }];
  if (layout.ramSize > low) out.push({ addr: 4 * GIB, size: layout.ramSize - low });
  return out;
}

/**
 * pcE820: the memory map a PC's firmware reports for `layout`: base memory up to the MP table at
 * 639 KiB, the MP table's KiB and the BIOS area reserved, RAM from 1 MiB to the PCI hole, and the
 * rest of RAM above 4 GiB. The VGA hole (640 KiB-960 KiB) is simply absent, as on a PC.
 */
export function pcE820(layout: PcMemoryLayout): E820Entry[] {
  const ranges = pcRamRanges(layout);
  const entries: E820Entry[] = [
    { addr: 0, size: MPTABLE_START, type: E820_RAM },
    { addr: MPTABLE_START, size: VGA_START - MPTABLE_START, type: E820_RESERVED },
    { addr: BIOS_START, size: HIGH_MEMORY - BIOS_START, type: E820_RESERVED },
    { addr: HIGH_MEMORY, size: ranges[0].size - HIGH_MEMORY, type: E820_RAM },
  ];
  if (ranges[1]) entries.push({ addr: ranges[1].addr, size: ranges[1].size, type: E820_RAM });
  return checkE820(entries);
}

/**
 * checkE820: the entries sorted by address, refused (VmmError EE820) when one is empty or not an
 * integer range, two overlap, or there are more than boot_params holds.
 */
export function checkE820(entries: readonly E820Entry[]): E820Entry[] {
  if (!Array.isArray(entries)) throw new ArgTypeError('an e820 map is an array of entries');
  if (entries.length > E820_MAX_ENTRIES) {
    throw new VmmError(
      'EE820',
      `${entries.length} e820 entries; boot_params holds at most ${E820_MAX_ENTRIES}`,
    );
  }
  const sorted = [...entries].sort((a, b) => a.addr - b.addr);
  let end = 0;
  for (const e of sorted) {
    if (!Number.isSafeInteger(e.addr) || !Number.isSafeInteger(e.size) || e.addr < 0 || e.size <= 0) {
      throw new VmmError(
        'EE820',
        `e820 entry ${JSON.stringify(e)} is not a non-empty range of safe integers`,
      );
    }
    if (!Number.isInteger(e.type) || e.type < E820_RAM || e.type > E820_UNUSABLE) {
      throw new VmmError('EE820', `e820 entry ${JSON.stringify(e)} has an unknown type`);
    }
    if (e.addr < end) {
      throw new VmmError(
        'EE820',
        `e820 entry at 0x${e.addr.toString(16)} overlaps the one ending at 0x${end.toString(16)}`,
      );
    }
    end = e.addr + e.size;
  }
  return sorted;
}

/** isE820Ram: whether `[addr, addr + size)` lies inside one RAM entry of `entries`. */
export function isE820Ram(entries: readonly E820Entry[], addr: number, size: number): boolean {
  return entries.some((e) => e.type === E820_RAM && addr >= e.addr && addr + size <= e.addr + e.size);
}

/** writeE820: the entries in boot_params' 20-byte format (addr u64, size u64, type u32) into `out`. */
export function writeE820(out: Uint8Array, entries: readonly E820Entry[]): number {
  const sorted = checkE820(entries);
  if (out.length < sorted.length * E820_ENTRY_SIZE) {
    throw new ArgRangeError(
      `${sorted.length} e820 entries need ${sorted.length * E820_ENTRY_SIZE} bytes, the buffer has ${out.length}`,
    );
  }
  const v = viewOf(out);
  sorted.forEach((e, i) => {
    const at = i * E820_ENTRY_SIZE;
    v.setBigUint64(at, BigInt(e.addr), true);
    v.setBigUint64(at + 8, BigInt(e.size), true);
    v.setUint32(at + 16, e.type, true);
  });
  return sorted.length;
}
