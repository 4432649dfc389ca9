import type { EmulatedConfig } from './config';
import {
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QMASK,
  PCI_MSI_FLAGS_QSIZE,
} from './constants';
import { checkInteger } from './types';

/** One MSI vector as the guest programmed it: the message the device would write. */
export interface MsiVector {
  /** The vector's number, from 0 (below the enabled vector count). */
  readonly index: number;
  /** The message address the guest programmed (the same for every vector of the capability). */
  readonly address: bigint;
  /** The message data: the programmed data with the vector number in its low bits. */
  readonly data: number;
  /** Per-vector mask (always false without per-vector masking). */
  readonly masked: boolean;
}

/** Where the fields of an MSI capability sit, by its flags. */
export interface MsiLayout {
  /** Offset of the MSI capability in configuration space. */
  readonly capOffset: number;
  /** Vectors the device can send (1, 2, 4, ... 32). */
  readonly capable: number;
  /** Whether the message address has an upper dword (64-bit address capable). */
  readonly is64: boolean;
  /** Whether the capability has per-vector mask and pending bits. */
  readonly maskable: boolean;
  /** Offset of the message data word in configuration space. */
  readonly dataOffset: number;
  /** Offsets of the mask and pending dwords, or -1 without per-vector masking. */
  readonly maskOffset: number;
  /** Offset of the pending dword in configuration space, or -1 without per-vector masking. */
  readonly pendingOffset: number;
  /** Bytes the capability spans. */
  readonly size: number;
}

/** The layout of the MSI capability at `capOffset` whose message control word is `flags`. */
export function msiLayout(capOffset: number, flags: number): MsiLayout {
  const is64 = (flags & PCI_MSI_FLAGS_64BIT) !== 0;
  const maskable = (flags & PCI_MSI_FLAGS_MASKBIT) !== 0;
  const dataOffset = capOffset + (is64 ? 0x0c : 0x08);
  const maskOffset = maskable ? capOffset + (is64 ? 0x10 : 0x0c) : -1;
  return {
    capOffset,
    capable: 1 << Math.min(5, (flags & PCI_MSI_FLAGS_QMASK) >> 1),
    is64,
    maskable,
    dataOffset,
    maskOffset,
    pendingOffset: maskable ? maskOffset + 4 : -1,
    size: (maskable ? maskOffset + 8 : dataOffset + 2) - capOffset,
  };
}

/**
 * Msi: the MSI capability as the guest sees it, emulated whole (as QEMU's msi_init makes it): the
 * kernel owns the device's real registers and vectors reach the host through VFIO_DEVICE_SET_IRQS.
 * The guest's writes land in the emulated config; {@link Msi.snapshot} reads them back so the
 * interrupt layer can tell what changed. Pending bits live in the emulated pending register, which
 * the guest can read but not write.
 */
export class Msi implements MsiLayout {
  readonly capOffset: number;
  readonly capable: number;
  readonly is64: boolean;
  readonly maskable: boolean;
  readonly dataOffset: number;
  readonly maskOffset: number;
  readonly pendingOffset: number;
  readonly size: number;
  readonly #emu: EmulatedConfig;
  readonly #flags: number;

  constructor(layout: MsiLayout, flags: number, emu: EmulatedConfig) {
    this.capOffset = layout.capOffset;
    this.capable = layout.capable;
    this.is64 = layout.is64;
    this.maskable = layout.maskable;
    this.dataOffset = layout.dataOffset;
    this.maskOffset = layout.maskOffset;
    this.pendingOffset = layout.pendingOffset;
    this.size = layout.size;
    this.#emu = emu;
    this.#flags = flags;
    this.reset();
  }

  /** The reset state: disabled, one vector enabled, address, data and masks zero, nothing pending. */
  reset(): void {
    const e = this.#emu;
    const ro = this.#flags & (PCI_MSI_FLAGS_QMASK | PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT);
    // The read-only fields show the device's own values; enable and QSIZE are the guest's.
    e.emulate(
      this.capOffset + PCI_MSI_FLAGS,
      2,
      BigInt(ro),
      0xffffn,
      BigInt(PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE),
    );
    e.emulate(this.capOffset + PCI_MSI_ADDRESS_LO, 4, 0n, 0xffff_ffffn, 0xffff_fffcn);
    if (this.is64) e.emulate(this.capOffset + 8, 4, 0n, 0xffff_ffffn, 0xffff_ffffn);
    e.emulate(this.dataOffset, 2, 0n, 0xffffn, 0xffffn);
    if (this.is64 || this.maskable) {
      // The two bytes after the data word are reserved: emulated so they read zero.
      e.emulate(this.dataOffset + 2, 2, 0n, 0xffffn, 0n);
    }
    if (this.maskable) {
      const used = this.capable === 32 ? 0xffff_ffffn : BigInt((1 << this.capable) - 1);
      e.emulate(this.maskOffset, 4, 0n, 0xffff_ffffn, used);
      e.emulate(this.pendingOffset, 4, 0n, 0xffff_ffffn, 0n);
    }
  }

  /** True when a write of `size` bytes at `offset` touches the capability's registers. */
  overlaps(offset: number, size: number): boolean {
    return offset < this.capOffset + this.size && this.capOffset + PCI_MSI_FLAGS < offset + size;
  }

  /** The MSI enable bit. */
  get enabled(): boolean {
    return (this.#control() & PCI_MSI_FLAGS_ENABLE) !== 0;
  }

  /** Vectors the guest enabled (multiple message enable, capped at what the device can send). */
  get vectors(): number {
    return Math.min(this.capable, 1 << Math.min(5, (this.#control() & PCI_MSI_FLAGS_QSIZE) >> 4));
  }

  /** The programmed message address. */
  get address(): bigint {
    const lo = BigInt(this.#emu.long(this.capOffset + PCI_MSI_ADDRESS_LO));
    return this.is64 ? (BigInt(this.#emu.long(this.capOffset + 8)) << 32n) | lo : lo;
  }

  /** The vector `index` as programmed. */
  vector(index: number): MsiVector {
    checkInteger(index, 'MSI vector index', this.capable - 1);
    const n = this.vectors;
    const base = this.#emu.valueAt(this.dataOffset, 2);
    // With n vectors enabled the device puts the vector number in the low log2(n) bits of the data.
    const data = (base & ~(n - 1)) | (index & (n - 1));
    return { index, address: this.address, data, masked: this.isMasked(index) };
  }

  /** Whether vector `index` is masked (per-vector masking only). */
  isMasked(index: number): boolean {
    if (!this.maskable) return false;
    return ((this.#emu.long(this.maskOffset) >>> index) & 1) !== 0;
  }

  /** Whether vector `index` is pending. */
  isPending(index: number): boolean {
    if (!this.maskable) return false;
    return ((this.#emu.long(this.pendingOffset) >>> index) & 1) !== 0;
  }

  /** Sets or clears vector `index`'s pending bit (only with per-vector masking). */
  setPending(index: number, pending: boolean): void {
    checkInteger(index, 'MSI vector index', this.capable - 1);
    if (!this.maskable) return;
    const cur = this.#emu.long(this.pendingOffset);
    const next = pending ? (cur | (1 << index)) >>> 0 : (cur & ~(1 << index)) >>> 0;
    this.#emu.emulate(this.pendingOffset, 4, BigInt(next), 0xffff_ffffn, 0n);
  }

  /** The state the interrupt layer compares across a guest write. */
  snapshot(): {
    /** The MSI enable bit. */
    enabled: boolean;
    /** Each vector the guest enabled, in order (as many as {@link Msi.vectors}). */
    vectors: MsiVector[];
  } {
    const enabled = this.enabled;
    const vectors: MsiVector[] = [];
    for (let i = 0; i < this.vectors; i++) vectors.push(this.vector(i));
    return { enabled, vectors };
  }

  #control(): number {
    return this.#emu.valueAt(this.capOffset + PCI_MSI_FLAGS, 2);
  }
}
