/**
 * A FixedWidthMemory over an ArrayBuffer, for tests, fakes and benchmarks where no device is mapped.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import type { FixedWidthMemory } from './types';

/**
 * Fixed-width little-endian loads and stores on an ArrayBuffer or SharedArrayBuffer, with the same
 * bounds rules as a native mapping: an access that does not fit is a `RangeError` naming the offset,
 * the width and the limit.
 */
export class BufferMemory implements FixedWidthMemory {
  /** Size of `buffer` in bytes; accesses must end at or below it. */
  readonly length: number;
  /** The wrapped (or allocated) buffer; writes through it are seen by later loads. */
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  private readonly dv: DataView;

  /** Wraps `source`, or allocates `source` zeroed bytes when given a number. */
  constructor(source: number | ArrayBuffer | SharedArrayBuffer) {
    if (typeof source === 'number') {
      if (!Number.isSafeInteger(source) || source < 0) {
        throw new ArgRangeError(
          `length ${source} is out of range: must be an integer in [0, ${Number.MAX_SAFE_INTEGER}]`,
        );
      }
      source = new ArrayBuffer(source);
    } else if (
      !(source instanceof ArrayBuffer) &&
      !(typeof SharedArrayBuffer !== 'undefined' && source instanceof SharedArrayBuffer)
    ) {
      throw new ArgTypeError('BufferMemory needs a length, an ArrayBuffer or a SharedArrayBuffer');
    }
    this.buffer = source;
    this.length = source.byteLength;
    this.dv = new DataView(source);
  }

  private check(o: number, width: number): void {
    if (!(Number.isInteger(o) && o >= 0 && o + width <= this.length)) {
      throw new ArgRangeError(`offset ${o} with width ${width} is out of bounds: limit ${this.length}`);
    }
  }

  read8(o: number): number {
    this.check(o, 1);
    return this.dv.getUint8(o);
  }
  read16(o: number): number {
    this.check(o, 2);
    return this.dv.getUint16(o, true);
  }
  read32(o: number): number {
    this.check(o, 4);
    return this.dv.getUint32(o, true);
  }
  read64(o: number): bigint {
    this.check(o, 8);
    return this.dv.getBigUint64(o, true);
  }
  write8(o: number, v: number): void {
    this.check(o, 1);
    this.dv.setUint8(o, v);
  }
  write16(o: number, v: number): void {
    this.check(o, 2);
    this.dv.setUint16(o, v, true);
  }
  write32(o: number, v: number): void {
    this.check(o, 4);
    this.dv.setUint32(o, v, true);
  }
  write64(o: number, v: bigint): void {
    this.check(o, 8);
    this.dv.setBigUint64(o, v, true);
  }
}
