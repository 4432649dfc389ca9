/**
 * Guest accesses dispatched through a flat view: the fast path of the last device range hit, one
 * whole access inside one range, and QEMU's address_space_rw cut of everything else into naturally
 * aligned pieces, lowest address first. The address space (address-space.ts) builds on it and says
 * what becomes of a refused piece.
 */
import { EventEmitter } from 'node:events';

import { ArgTypeError } from '../base/error';
import { allOnes } from '../base/values';
import type { FlatRange, FlatView } from './flat-view';
import type { MemoryRegion } from './region';
import { K_RAM, K_RAM_DEVICE, type AccessLength, type AccessSize, type FixedWidthMemory } from './types';
import {
  ADDRESS_LIMIT,
  checkAccessEnd,
  checkAccessLength,
  checkAddress,
  checkLengthValue,
  checkValue,
  MAX_ADDRESS,
} from './validate';
import type { AddressSpaceEvents, UnassignedReason } from './unassigned';

/** All-ones value of each access size, as a guest reads it from nothing (lib/base's allOnes). */
const ones = allOnes;

/**
 * GuestAccessDispatch: the half of an `AddressSpace` that serves guest accesses from the flat
 * view it is shown. It never throws for guest reasons: what no region takes, or what a region
 * refuses, goes to `_report`, which the address space implements.
 * @internal
 */
export abstract class GuestAccessDispatch extends EventEmitter<AddressSpaceEvents> {
  private _fv: FlatView;
  // The last ram-device range hit, so that repeated device accesses skip the range lookup. Reset with
  // every new flat view. `_hitWritable` is false for read-only ranges.
  private _hitStart = 0;
  private _hitEnd = 0;
  private _hitDelta = 0;
  private _hitMem: FixedWidthMemory | null = null;
  private _hitWritable = false;

  protected constructor(fv: FlatView) {
    super();
    this._fv = fv;
  }

  /** The flat view as of the last commit. */
  get flatView(): FlatView {
    return this._fv;
  }

  /** Serves later accesses from `fv`, forgetting the last range hit (it may be gone). */
  protected _show(fv: FlatView): void {
    this._fv = fv;
    this._hitStart = 0;
    this._hitEnd = 0;
    this._hitMem = null;
    this._hitWritable = false;
  }

  /** A guest access that reached no region or that `r` refused: it counts and is reported. */
  protected abstract _report(
    addr: number,
    size: number,
    isWrite: boolean,
    reason: UnassignedReason,
    r?: MemoryRegion,
    error?: unknown,
  ): void;

  /** Throws if the address space was closed. */
  protected abstract _assertOpen(): void;

  /**
   * Reads `size` bytes (1 to 8) at `addr`, little-endian: a `bigint` for 7 and 8 bytes, otherwise a
   * number. An access of 1, 2, 4 or 8 bytes inside one range reaches it whole; one that crosses ranges,
   * or of 3, 5, 6 or 7 bytes, is split per range into naturally aligned pieces no wider than the region
   * accepts, lowest address first, as QEMU's address_space_rw does. The access must end at or below
   * 2^53 (a RangeError otherwise).
   */
  read(addr: number, size: AccessLength): number | bigint {
    // Fast path: the last device range hit again. The hit window lies inside [0, 2^53), so only
    // integrality remains to be checked; anything unusual falls through to the full path.
    if (addr >= this._hitStart && addr + size <= this._hitEnd && Math.floor(addr) === addr) {
      const off = addr + this._hitDelta;
      const m = this._hitMem!;
      try {
        if (size === 4) return m.read32(off);
        if (size === 8) return m.read64(off);
        if (size === 2) return m.read16(off);
        if (size === 1) return m.read8(off);
      } catch (e) {
        return this._fault(e, addr, size, false);
      }
    }
    return this._read(addr, size);
  }

  private _read(addr: number, size: AccessLength): number | bigint {
    if (!(addr >= 0 && addr <= MAX_ADDRESS && Math.floor(addr) === addr)) checkAddress('address', addr);
    if (size !== 4 && size !== 1 && size !== 2 && size !== 8) {
      checkAccessLength(size);
      checkAccessEnd(addr, size);
      return this._readSlow(addr, size);
    }
    if (addr > ADDRESS_LIMIT - size) checkAccessEnd(addr, size);
    const range = this._fv.rangeAt(addr);
    if (range === undefined || addr + size > range.addr + range.size) return this._readSlow(addr, size);
    const r = range.region;
    const off = range.offsetInRegion + (addr - range.addr);
    if (r.kindCode === K_RAM_DEVICE) {
      const m = r.memory!;
      this._remember(range, m);
      return this._deviceRead(m, off, addr, size);
    }
    const io = r.io;
    if (io !== null && io.needsSplit(off, size)) return this._readSlow(addr, size);
    return this._readIn(range, off, addr, size);
  }

  /**
   * Writes `value` (a `bigint` iff `size` is 7 or 8) at `addr`, little-endian, split as
   * `read` splits.
   */
  write(addr: number, size: AccessLength, value: number | bigint): void {
    // Fast path, as in read(), with the value checked for its width on the way.
    if (
      this._hitWritable &&
      addr >= this._hitStart &&
      addr + size <= this._hitEnd &&
      Math.floor(addr) === addr
    ) {
      const off = addr + this._hitDelta;
      const m = this._hitMem!;
      try {
        if (size === 4) {
          if (typeof value === 'number' && value >>> 0 === value) return m.write32(off, value);
        } else if (size === 8) {
          if (typeof value === 'bigint' && BigInt.asUintN(64, value) === value) return m.write64(off, value);
        } else if (size === 2) {
          if (typeof value === 'number' && (value & 0xffff) === value) return m.write16(off, value);
        } else if (size === 1) {
          if (typeof value === 'number' && (value & 0xff) === value) return m.write8(off, value);
        }
      } catch (e) {
        this._fault(e, addr, size, true);
        return;
      }
    }
    this._write(addr, size, value);
  }

  private _write(addr: number, size: AccessLength, value: number | bigint): void {
    if (!(addr >= 0 && addr <= MAX_ADDRESS && Math.floor(addr) === addr)) checkAddress('address', addr);
    if (size === 4) {
      if (typeof value !== 'number' || value >>> 0 !== value) checkValue(size, value);
    } else if (size === 1 || size === 2 || size === 8) {
      checkValue(size, value);
    } else {
      checkLengthValue(checkAccessLength(size), value);
      checkAccessEnd(addr, size);
      return this._writeSlow(addr, size, value);
    }
    if (addr > ADDRESS_LIMIT - size) checkAccessEnd(addr, size);
    const range = this._fv.rangeAt(addr);
    if (range === undefined || addr + size > range.addr + range.size)
      return this._writeSlow(addr, size, value);
    const r = range.region;
    const off = range.offsetInRegion + (addr - range.addr);
    if (r.kindCode === K_RAM_DEVICE) {
      const m = r.memory!;
      this._remember(range, m);
      if (!range.readonly) {
        this._deviceWrite(m, off, addr, size, value);
        return;
      }
    }
    const io = r.io;
    if (io !== null && io.needsSplit(off, size)) return this._writeSlow(addr, size, value);
    this._writeIn(range, off, addr, size, value);
  }

  /** An 8-byte read delivered as two 32-bit halves: `out[0]` low, `out[1]` high. */
  read64Pair(addr: number, out: Uint32Array): void {
    if (!(out instanceof Uint32Array) || out.length < 2) {
      throw new ArgTypeError('read64Pair needs a Uint32Array of at least 2 elements');
    }
    checkAddress('address', addr);
    checkAccessEnd(addr, 8);
    const range = this._fv.rangeAt(addr);
    if (range !== undefined && addr + 8 <= range.addr + range.size) {
      const r = range.region;
      const off = range.offsetInRegion + (addr - range.addr);
      const k = r.kindCode;
      if (k === K_RAM_DEVICE && r.memory!.read64Pair !== undefined) {
        try {
          r.memory!.read64Pair(off, out);
        } catch (e) {
          this._fault(e, addr, 8, false);
          out[0] = 0xffffffff;
          out[1] = 0xffffffff;
        }
        return;
      }
      if (k === K_RAM) {
        const dv = r.ramView;
        out[0] = dv.getUint32(off, true);
        out[1] = dv.getUint32(off + 4, true);
        return;
      }
    }
    const v = this.read(addr, 8) as bigint;
    out[0] = Number(v & 0xffffffffn);
    out[1] = Number(v >> 32n);
  }

  /** An 8-byte write given as two 32-bit halves. */
  write64Pair(addr: number, lo: number, hi: number): void {
    checkAddress('address', addr);
    checkAccessEnd(addr, 8);
    checkValue(4, lo);
    checkValue(4, hi);
    const range = this._fv.rangeAt(addr);
    if (range !== undefined && addr + 8 <= range.addr + range.size) {
      const r = range.region;
      const off = range.offsetInRegion + (addr - range.addr);
      const k = r.kindCode;
      if (!range.readonly && k === K_RAM_DEVICE && r.memory!.write64Pair !== undefined) {
        try {
          r.memory!.write64Pair(off, lo, hi);
        } catch (e) {
          this._fault(e, addr, 8, true);
        }
        return;
      }
      if (!range.readonly && k === K_RAM) {
        const dv = r.ramView;
        dv.setUint32(off, lo, true);
        dv.setUint32(off + 4, hi, true);
        return;
      }
    }
    this.write(addr, 8, (BigInt(hi) << 32n) | BigInt(lo));
  }

  /** One load of exactly `size` bytes from device memory; a fault reads as all-ones and is reported. */
  private _deviceRead(m: FixedWidthMemory, off: number, addr: number, size: AccessSize): number | bigint {
    try {
      return size === 4
        ? m.read32(off)
        : size === 8
          ? m.read64(off)
          : size === 2
            ? m.read16(off)
            : m.read8(off);
    } catch (e) {
      return this._fault(e, addr, size, false);
    }
  }

  /** One store of exactly `size` bytes to device memory; a fault drops it and is reported. */
  private _deviceWrite(
    m: FixedWidthMemory,
    off: number,
    addr: number,
    size: AccessSize,
    value: number | bigint,
  ): void {
    try {
      if (size === 4) m.write32(off, value as number);
      else if (size === 8) m.write64(off, value as bigint);
      else if (size === 2) m.write16(off, value as number);
      else m.write8(off, value as number);
    } catch (e) {
      this._fault(e, addr, size, true);
    }
  }

  /**
   * A ram-device access that threw: the device memory faulted (vfio-pci revokes a BAR's mapping while
   * the device is reset or in a low-power state, and the access throws VfioError 'SIGBUS'). A guest
   * can cause that, so it must not throw at the VMM: it reads as all-ones, a write is dropped, and the
   * error is reported with the access.
   */
  private _fault(error: unknown, addr: number, size: number, isWrite: boolean): number | bigint {
    this._report(addr, size, isWrite, 'fault', this._fv.rangeAt(addr)?.region, error);
    return ones(size);
  }

  private _remember(range: FlatRange, m: FixedWidthMemory): void {
    this._hitStart = range.addr;
    this._hitEnd = range.addr + range.size;
    this._hitDelta = range.offsetInRegion - range.addr;
    this._hitMem = m;
    this._hitWritable = !range.readonly;
  }

  /** One access that lies entirely inside `range`. */
  private _readIn(range: FlatRange, off: number, addr: number, size: AccessSize): number | bigint {
    const r = range.region;
    const k = r.kindCode;
    if (k === K_RAM) {
      const dv = r.ramView;
      return size === 4
        ? dv.getUint32(off, true)
        : size === 8
          ? dv.getBigUint64(off, true)
          : size === 2
            ? dv.getUint16(off, true)
            : dv.getUint8(off);
    }
    if (k === K_RAM_DEVICE) return this._deviceRead(r.memory!, off, addr, size);
    const io = r.io!;
    const why = io.refusal(off, size, false);
    if (why !== null) {
      this._report(addr, size, false, why, r);
      return ones(size);
    }
    return io.read(off, size);
  }

  private _writeIn(
    range: FlatRange,
    off: number,
    addr: number,
    size: AccessSize,
    value: number | bigint,
  ): void {
    const r = range.region;
    if (range.readonly) {
      this._report(addr, size, true, 'readonly', r);
      return;
    }
    const k = r.kindCode;
    if (k === K_RAM) {
      const dv = r.ramView;
      if (size === 4) dv.setUint32(off, value as number, true);
      else if (size === 8) dv.setBigUint64(off, value as bigint, true);
      else if (size === 2) dv.setUint16(off, value as number, true);
      else dv.setUint8(off, value as number);
      return;
    }
    if (k === K_RAM_DEVICE) {
      this._deviceWrite(r.memory!, off, addr, size, value);
      return;
    }
    const io = r.io!;
    const why = io.refusal(off, size, true);
    if (why !== null) {
      this._report(addr, size, true, why, r);
      return;
    }
    io.write(off, size, value);
  }

  /** Access that crosses a range boundary or touches unassigned space. */
  private _readSlow(addr: number, size: AccessLength): number | bigint {
    this._assertOpen();
    let v = 0n;
    this._fv.pieces(addr, size, (at, n, range) => {
      let piece: bigint;
      if (range === null) {
        this._report(at, n, false, 'unassigned');
        piece = (1n << BigInt(n * 8)) - 1n;
      } else {
        const got = this._readIn(range, range.offsetInRegion + (at - range.addr), at, n as AccessSize);
        // Each piece is held to its own width before it is combined: a memory that hands back more
        // than it was asked for must not spill into its neighbours.
        piece = BigInt.asUintN(n * 8, BigInt(got));
      }
      v |= piece << BigInt((at - addr) * 8);
    });
    return size >= 7 ? v : Number(v);
  }

  private _writeSlow(addr: number, size: AccessLength, value: number | bigint): void {
    this._assertOpen();
    const v = BigInt(value);
    this._fv.pieces(addr, size, (at, n, range) => {
      if (range === null) {
        this._report(at, n, true, 'unassigned');
        return;
      }
      const piece = BigInt.asUintN(n * 8, v >> BigInt((at - addr) * 8));
      this._writeIn(
        range,
        range.offsetInRegion + (at - range.addr),
        at,
        n as AccessSize,
        n === 8 ? piece : Number(piece),
      );
    });
  }
}
