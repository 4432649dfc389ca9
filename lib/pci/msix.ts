import { ArgRangeError, ArgTypeError } from '../base/error';
import { type AccessSize, MemoryRegion } from '../memory';
import { PCI_MSIX_ENTRY_SIZE } from './constants';
import { checkInteger, hex, type PciRegionTag } from './types';

/** Where the MSI-X structures live, as found in the capability (after any relocation). */
export interface MsixLayout {
  /** Offset of the MSI-X capability in configuration space. */
  readonly capOffset: number;
  /** Table size in vectors (the capability's table size field plus one, 1 to 2048). */
  readonly entries: number;
  /** BAR number that holds the table. */
  readonly tableBar: number;
  /** Offset of the table inside that BAR, in bytes. */
  readonly tableOffset: number;
  /** BAR number that holds the pending bit array. */
  readonly pbaBar: number;
  /** Offset of the pending bit array inside that BAR, in bytes. */
  readonly pbaOffset: number;
}

/** One programmed MSI-X vector, as the guest wrote it in the emulated table. */
export interface MsixVector {
  /** The entry's number in the table, from 0. */
  readonly index: number;
  /** The message address (the entry's upper and lower address dwords). */
  readonly address: bigint;
  /** The message data dword. */
  readonly data: number;
  /** Per-vector mask bit. */
  readonly masked: boolean;
}

/** What changed, passed to MSI-X listeners. */
export type MsixEvent =
  | {
      /** The guest wrote a table entry. */
      kind: 'vector';
      /** The entry as it now stands. */
      vector: MsixVector;
    }
  | {
      /** The enable or function mask bit of message control changed (a guest write or a reset). */
      kind: 'control';
      /** The MSI-X enable bit. */
      enabled: boolean;
      /** The function mask bit: every vector masked, whatever its own mask bit. */
      functionMasked: boolean;
    };

/**
 * Msix: the emulated MSI-X table and PBA of one device.
 *
 * The guest's table lives here, not in the device: the kernel owns the device's real table, and
 * vectors reach the host through VFIO_DEVICE_SET_IRQS. Listeners learn every change so the
 * interrupt wiring can follow the guest.
 */
export class Msix implements MsixLayout {
  readonly capOffset: number;
  readonly entries: number;
  readonly tableBar: number;
  readonly tableOffset: number;
  readonly pbaBar: number;
  readonly pbaOffset: number;
  /** True when the structures were moved away from where the device has them. */
  readonly relocated: boolean;
  /** Size of the table in bytes. */
  readonly tableSize: number;
  /** Size of the PBA in bytes (a whole number of qwords). */
  readonly pbaSize: number;
  /** The "msix-table" overlay. */
  readonly tableRegion: MemoryRegion;
  /** The "msix-pba" overlay, enabled only while a vector is pending, as QEMU does. */
  readonly pbaRegion: MemoryRegion;

  #table: Uint32Array;
  #pending: Uint32Array;
  #enabled = false;
  #functionMasked = false;
  #listeners = new Set<(e: MsixEvent) => void>();

  constructor(layout: MsixLayout, relocated: boolean, bdf: string) {
    checkInteger(layout.entries, 'MSI-X table size', 2048);
    if (layout.entries < 1) throw new ArgRangeError(`MSI-X table size ${layout.entries} is below 1`);
    this.capOffset = layout.capOffset;
    this.entries = layout.entries;
    this.tableBar = layout.tableBar;
    this.tableOffset = layout.tableOffset;
    this.pbaBar = layout.pbaBar;
    this.pbaOffset = layout.pbaOffset;
    this.relocated = relocated;
    this.tableSize = this.entries * PCI_MSIX_ENTRY_SIZE;
    this.pbaSize = Math.ceil(this.entries / 64) * 8;
    this.#table = new Uint32Array(this.entries * 4);
    // Vectors come out of reset masked.
    for (let i = 0; i < this.entries; i++) this.#table[i * 4 + 3] = 1;
    this.#pending = new Uint32Array(this.pbaSize / 4);

    const access = { minAccessSize: 4 as AccessSize, maxAccessSize: 8 as AccessSize, unaligned: false };
    this.tableRegion = MemoryRegion.io('msix-table', this.tableSize, {
      read: (o, s) => this.tableRead(o, s),
      write: (o, s, v) => this.tableWrite(o, s, v),
      valid: access,
      impl: access,
    });
    this.pbaRegion = MemoryRegion.io('msix-pba', this.pbaSize, {
      read: (o, s) => this.pbaRead(o, s),
      // The PBA is read-only to software; writes have no effect on real devices either.
      write: () => undefined,
      valid: access,
      impl: access,
    });
    const tag = (role: 'msix-table' | 'msix-pba', bar: number, barOffset: number): PciRegionTag => ({
      owner: 'vfio-pci',
      bdf,
      bar,
      role,
      minAccess: 4,
      maxAccess: 8,
      barOffset,
    });
    this.tableRegion.tag = tag('msix-table', this.tableBar, this.tableOffset);
    this.pbaRegion.tag = tag('msix-pba', this.pbaBar, this.pbaOffset);
    this.pbaRegion.setEnabled(false);
  }

  /** MSI-X enable bit of the message control register, as the guest last wrote it. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Function mask bit of the message control register. */
  get functionMasked(): boolean {
    return this.#functionMasked;
  }

  /** True when the table bounds contain `size` bytes at `offset`. */
  containsTable(offset: number, size: number): boolean {
    return Number.isSafeInteger(offset) && offset >= 0 && offset + size <= this.tableSize;
  }

  #checkTable(offset: number, size: AccessSize): void {
    if (!this.containsTable(offset, size)) {
      throw new ArgRangeError(
        `MSI-X table access of ${size} bytes at ${hex(offset)} is outside the ${this.entries}-entry table (${hex(this.tableSize)} bytes)`,
      );
    }
    if ((size !== 4 && size !== 8) || offset % size !== 0) {
      throw new ArgRangeError(
        `MSI-X table access of ${size} bytes at ${hex(offset)} is not an aligned dword or qword`,
      );
    }
  }

  /** Reads the emulated table; bounds-checked, 4 or 8 bytes, aligned. */
  tableRead(offset: number, size: AccessSize): number | bigint {
    this.#checkTable(offset, size);
    const w = offset / 4;
    if (size === 8) return (BigInt(this.#table[w + 1]) << 32n) | BigInt(this.#table[w]);
    return this.#table[w];
  }

  /** Writes the emulated table; bounds-checked, 4 or 8 bytes, aligned. */
  tableWrite(offset: number, size: AccessSize, value: number | bigint): void {
    this.#checkTable(offset, size);
    const w = offset / 4;
    if (size === 8) {
      const v = BigInt(value);
      this.#table[w] = Number(v & 0xffff_ffffn);
      this.#table[w + 1] = Number((v >> 32n) & 0xffff_ffffn);
    } else {
      this.#table[w] = Number(value) >>> 0;
    }
    // An aligned access never straddles two 16-byte entries.
    this.#emit({ kind: 'vector', vector: this.vector(Math.floor(offset / PCI_MSIX_ENTRY_SIZE)) });
  }

  /** Reads the pending bit array. */
  pbaRead(offset: number, size: AccessSize): number | bigint {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + size > this.pbaSize || offset % size) {
      throw new ArgRangeError(
        `MSI-X PBA access of ${size} bytes at ${hex(offset)} is outside ${hex(this.pbaSize)} bytes`,
      );
    }
    const w = offset / 4;
    if (size === 8) return (BigInt(this.#pending[w + 1]) << 32n) | BigInt(this.#pending[w]);
    return this.#pending[w];
  }

  /** The entry `index` as programmed by the guest; `index` is bounds-checked. */
  vector(index: number): MsixVector {
    checkInteger(index, 'MSI-X vector index', this.entries - 1);
    const w = index * 4;
    return {
      index,
      address: (BigInt(this.#table[w + 1]) << 32n) | BigInt(this.#table[w]),
      data: this.#table[w + 2],
      masked: (this.#table[w + 3] & 1) !== 0,
    };
  }

  /** All entries of the table. */
  vectors(): MsixVector[] {
    const out: MsixVector[] = [];
    for (let i = 0; i < this.entries; i++) out.push(this.vector(i));
    return out;
  }

  /** Whether entry `index` is masked (its own mask bit; the function mask is separate). */
  isMasked(index: number): boolean {
    checkInteger(index, 'MSI-X vector index', this.entries - 1);
    return (this.#table[index * 4 + 3] & 1) !== 0;
  }

  /** Whether vector `index` is pending. */
  isPending(index: number): boolean {
    checkInteger(index, 'MSI-X vector index', this.entries - 1);
    return ((this.#pending[index >>> 5] >>> (index & 31)) & 1) !== 0;
  }

  /**
   * Marks vector `index` pending or not. The PBA overlay is enabled only while something is
   * pending, so in the common case the page holding it stays mappable.
   */
  setPending(index: number, pending: boolean): void {
    checkInteger(index, 'MSI-X vector index', this.entries - 1);
    const bit = 1 << (index & 31);
    if (pending) this.#pending[index >>> 5] |= bit;
    else this.#pending[index >>> 5] &= ~bit;
    this.pbaRegion.setEnabled(this.#pending.some((x) => x !== 0));
  }

  /** Records the guest's message control register (enable and function mask bits). */
  setControl(enabled: boolean, functionMasked: boolean): void {
    if (enabled === this.#enabled && functionMasked === this.#functionMasked) return;
    this.#enabled = enabled;
    this.#functionMasked = functionMasked;
    this.#emit({ kind: 'control', enabled, functionMasked });
  }

  /**
   * Back to the reset state, as a PCI reset leaves MSI-X: disabled, every entry zero and masked,
   * nothing pending. Listeners hear the control change only; entries are read again on enable.
   */
  reset(): void {
    this.#table.fill(0);
    for (let i = 0; i < this.entries; i++) this.#table[i * 4 + 3] = 1;
    this.#pending.fill(0);
    this.pbaRegion.setEnabled(false);
    this.setControl(false, false);
  }

  /** Calls `listener` on every vector or control change; returns the remover. */
  onChange(listener: (e: MsixEvent) => void): () => void {
    if (typeof listener !== 'function') throw new ArgTypeError('MSI-X listener must be a function');
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(e: MsixEvent): void {
    for (const l of this.#listeners) l(e);
  }
}
