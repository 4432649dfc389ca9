/**
 * An io region's callbacks with their access rules resolved: what the device accepts (QEMU's
 * memory_region_access_valid), what the callbacks implement (access_with_adjusted_size), and how
 * an access too wide or misaligned for the device is cut into pieces first.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import type { AccessSize, MemoryRegionOps } from './types';
import type { UnassignedReason } from './unassigned';

function accessSizeOption(where: string, v: unknown, dflt: AccessSize): AccessSize {
  if (v === undefined) return dflt;
  if (v === 1 || v === 2 || v === 4 || v === 8) return v;
  throw new ArgRangeError(`${where} ${String(v)} is invalid: must be 1, 2, 4 or 8`);
}

function truncate(v: number | bigint, size: number): number {
  if (typeof v === 'bigint') return Number(BigInt.asUintN(size * 8, v));
  return size === 4 ? v >>> 0 : size === 2 ? v & 0xffff : v & 0xff;
}

/**
 * IoOps: the callbacks of one io region and the `valid` and `impl` rules they come with, checked
 * once when the region is created. Offsets are relative to the region.
 * @internal
 */
export class IoOps {
  /** The callbacks as given. */
  readonly ops: MemoryRegionOps;
  /** Smallest and largest access the device accepts, and whether it takes misaligned ones. */
  private readonly _validMin: AccessSize;
  private readonly _validMax: AccessSize;
  private readonly _validUnaligned: boolean;
  private readonly _accepts: ((offset: number, size: AccessSize, isWrite: boolean) => boolean) | null;
  /** Smallest and largest access the callbacks implement. */
  private readonly _implMin: AccessSize;
  private readonly _implMax: AccessSize;

  /** Checks `ops` of the region called `name`; a bad rule is a TypeError or RangeError naming it. */
  constructor(
    private readonly _name: string,
    ops: MemoryRegionOps,
  ) {
    if (ops === null || typeof ops !== 'object')
      throw new ArgTypeError(`ops of region '${_name}' must be an object`);
    if (typeof ops.read !== 'function' || typeof ops.write !== 'function') {
      throw new ArgTypeError(`ops of region '${_name}' must have read and write functions`);
    }
    const v = ops.valid ?? {};
    const i = ops.impl ?? {};
    this._validMin = accessSizeOption(`${_name}: valid.minAccessSize`, v.minAccessSize, 1);
    this._validMax = accessSizeOption(`${_name}: valid.maxAccessSize`, v.maxAccessSize, 4);
    this._implMin = accessSizeOption(`${_name}: impl.minAccessSize`, i.minAccessSize, 1);
    this._implMax = accessSizeOption(`${_name}: impl.maxAccessSize`, i.maxAccessSize, 4);
    if (this._validMin > this._validMax) {
      throw new ArgRangeError(
        `${_name}: valid.minAccessSize ${this._validMin} exceeds valid.maxAccessSize ${this._validMax}`,
      );
    }
    if (this._implMin > this._implMax) {
      throw new ArgRangeError(
        `${_name}: impl.minAccessSize ${this._implMin} exceeds impl.maxAccessSize ${this._implMax}`,
      );
    }
    this._validUnaligned = v.unaligned === true;
    if (i.unaligned === true && !this._validUnaligned) {
      throw new ArgRangeError(
        `${_name}: impl.unaligned needs valid.unaligned (the device cannot see what it rejects)`,
      );
    }
    let accepts: IoOps['_accepts'] = null;
    if (v.accepts !== undefined) {
      if (typeof v.accepts !== 'function')
        throw new ArgTypeError(`${_name}: valid.accepts must be a function`);
      accepts = v.accepts.bind(v);
    }
    this._accepts = accepts;
    this.ops = ops;
  }

  /** The widest piece the device takes (`valid.maxAccessSize`). */
  get widest(): AccessSize {
    return this._validMax;
  }

  /** Why the device would refuse this access, or null if it accepts it. */
  refusal(off: number, size: AccessSize, isWrite: boolean): UnassignedReason | null {
    if (this._accepts !== null && !this._accepts(off, size, isWrite)) return 'rejected';
    // `&` keeps the low 32 bits of any safe integer, which is all an alignment test needs.
    if (!this._validUnaligned && (off & (size - 1)) !== 0) return 'unaligned';
    if (size > this._validMax || size < this._validMin) return 'invalid-size';
    return null;
  }

  /**
   * Whether an access of 1, 2, 4 or 8 bytes must be cut into pieces first: wider than the device
   * takes, or misaligned where it takes no misaligned access. QEMU's address_space_rw cuts these
   * (memory_access_size) before the region judges each piece, so a misaligned 4-byte MMIO exit
   * reaches a device that takes 2-byte accesses as two of them.
   */
  needsSplit(off: number, size: AccessSize): boolean {
    return size > this._validMax || (!this._validUnaligned && (off & (size - 1)) !== 0);
  }

  /**
   * Reads through the callback with impl-sized accesses: a wider access is split into consecutive
   * impl-sized ones combined little-endian, a narrower one is widened to impl.min and truncated, as
   * QEMU's access_with_adjusted_size does.
   */
  read(off: number, size: AccessSize): number | bigint {
    const ops = this.ops;
    const acc = this._implSize(size);
    if (acc === size) return this._normalize(ops.read(off, size), size);
    if (acc > size) return truncate(this._normalize(ops.read(off, acc as AccessSize), acc), size);
    if (size === 8) {
      let v = 0n;
      for (let i = 0; i < 8; i += acc) {
        v |= BigInt(this._normalize(ops.read(off + i, acc as AccessSize), acc)) << BigInt(i * 8);
      }
      return v;
    }
    let v = 0;
    for (let i = 0; i < size; i += acc) {
      v += (this._normalize(ops.read(off + i, acc as AccessSize), acc) as number) * 2 ** (i * 8);
    }
    return v;
  }

  /** Writes through the callback with impl-sized accesses (see {@link IoOps.read}). */
  write(off: number, size: AccessSize, value: number | bigint): void {
    const ops = this.ops;
    const acc = this._implSize(size);
    if (acc === size) {
      ops.write(off, size, value);
    } else if (acc > size) {
      // A narrow write to a wide-only implementation carries zeros in the upper bytes, as in QEMU.
      ops.write(off, acc as AccessSize, acc === 8 ? BigInt(value) : value);
    } else if (size === 8) {
      const v = value as bigint;
      const mask = (1n << BigInt(acc * 8)) - 1n;
      for (let i = 0; i < 8; i += acc) {
        ops.write(off + i, acc as AccessSize, Number((v >> BigInt(i * 8)) & mask));
      }
    } else {
      const v = value as number;
      const mask = acc === 2 ? 0xffff : 0xff;
      for (let i = 0; i < size; i += acc) ops.write(off + i, acc as AccessSize, (v >>> (i * 8)) & mask);
    }
  }

  private _implSize(size: number): number {
    const s = size < this._implMax ? size : this._implMax;
    return s < this._implMin ? this._implMin : s;
  }

  /** Checks and masks what a read callback returned to `size` bytes. */
  private _normalize(v: unknown, size: number): number | bigint {
    if (size === 8) {
      if (typeof v !== 'bigint') {
        throw new ArgTypeError(
          `read callback of region '${this._name}' returned ${typeof v} for an 8-byte read; expected a bigint`,
        );
      }
      return BigInt.asUintN(64, v);
    }
    if (typeof v !== 'number') {
      throw new ArgTypeError(
        `read callback of region '${this._name}' returned ${typeof v} for a ${size}-byte read; expected a number`,
      );
    }
    return size === 4 ? v >>> 0 : size === 2 ? v & 0xffff : v & 0xff;
  }
}
