/**
 * Region I/O on a VFIO device fd: what Device's read, write, readBlock, writeBlock and map do once
 * the device is open and the region's info is known. Each access is checked (its width, its range
 * in the region, the value, the region's permissions and mmap capability) before its one pread or
 * pwrite, or its mmap, and a refused one names the region and the device.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { VfioError } from '../base/native-errors';
import { native, type NativeHandle } from '../native';
import type { AccessSize } from '../types';
import { Mapping, PAGE_SIZE } from './mapping';
import { isMdevUuid } from './mdev/sysfs';
import { VFIO_PCI_ROM_REGION_INDEX, type RegionInfo } from './uapi';

function checkSize(size: unknown): AccessSize {
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8) {
    throw new ArgRangeError(`size ${String(size)} is not 1, 2, 4 or 8`);
  }
  return size;
}

/** The index of the expansion ROM region of a vfio-pci device. */
const ROM_REGION = 6;

function checkRange(
  op: string,
  region: RegionInfo,
  offset: unknown,
  size: unknown,
  limit: number = region.size,
  bdf = 'the device',
): number {
  if (typeof offset !== 'number')
    throw new ArgTypeError(`${op}: offset must be a number, got ${typeof offset}`);
  if (typeof size !== 'number') throw new ArgTypeError(`${op}: size must be a number, got ${typeof size}`);
  if (region.size === 0) {
    // An empty region is one the device does not implement; say so rather than quote its bounds.
    throw new ArgRangeError(
      region.index === ROM_REGION
        ? `${op}: ${bdf} has no expansion ROM (region ${ROM_REGION} is empty)`
        : `${op}: ${bdf} does not implement region ${region.index} (it is empty)`,
    );
  }
  if (
    !Number.isSafeInteger(offset) ||
    offset < 0 ||
    !Number.isSafeInteger(size) ||
    size < 0 ||
    offset > limit ||
    size > limit - offset
  ) {
    throw new ArgRangeError(
      `${op}: offset ${offset} width ${size} is outside region ${region.index} (size ${limit})`,
    );
  }
  return offset;
}

/**
 * The region I/O of one device, which its refusals name: Device's read, write, readBlock,
 * writeBlock and map once the device is open (`h`) and the region's info is known.
 */
export class RegionIo {
  /** The PCI address, or a mediated device's UUID. */
  readonly #bdf: string;
  /** The node the device fd came from (its group or its cdev). */
  readonly #path: string;

  constructor(bdf: string, path: string) {
    this.#bdf = bdf;
    this.#path = path;
  }

  /** Device.read: exactly `size` bytes at `offset` in the region with one pread. */
  read(h: NativeHandle, info: RegionInfo, offset: number, size: AccessSize): number | bigint {
    checkSize(size);
    checkRange('read', info, offset, size, info.size, this.#bdf);
    if (!info.readable) throw this.#denied('pread', info, 'readable');
    return native.pread(h, info.offset + offset, size);
  }

  /** Device.write: exactly `size` bytes at `offset` in the region with one pwrite. */
  write(h: NativeHandle, info: RegionInfo, offset: number, size: AccessSize, v: number | bigint): void {
    checkSize(size);
    checkRange('write', info, offset, size, info.size, this.#bdf);
    if (size === 8 ? typeof v !== 'bigint' : typeof v !== 'number') {
      throw new ArgTypeError(`write: a ${size}-byte value must be a ${size === 8 ? 'bigint' : 'number'}`);
    }
    if (
      size === 8
        ? (v as bigint) < 0n || (v as bigint) > 0xffff_ffff_ffff_ffffn
        : !Number.isInteger(v) || (v as number) < 0 || (v as number) >= 2 ** (8 * size)
    ) {
      throw new ArgRangeError(`write: value ${String(v)} does not fit in ${size} byte(s) unsigned`);
    }
    if (!info.writable) throw this.#denied('pwrite', info, 'writable');
    native.pwrite(h, info.offset + offset, size, v);
  }

  /** Device.readBlock: `length` bytes at `offset` in the region into a new Buffer with one pread. */
  readBlock(h: NativeHandle, info: RegionInfo, offset: number, length: number): Buffer {
    checkRange('readBlock', info, offset, length, info.size, this.#bdf);
    if (!info.readable) throw this.#denied('pread', info, 'readable');
    return native.preadBlock(h, info.offset + offset, length);
  }

  /** Device.writeBlock: all of `data` at `offset` in the region with one pwrite. */
  writeBlock(h: NativeHandle, info: RegionInfo, offset: number, data: Uint8Array): void {
    checkRange('writeBlock', info, offset, data.length, info.size, this.#bdf);
    if (!info.writable) throw this.#denied('pwrite', info, 'writable');
    native.pwriteBlock(h, info.offset + offset, data);
  }

  /**
   * Device.map: `length` bytes of region `region` from `offset`, up to its size rounded up to a
   * whole page as the kernel's own check is; a BAR of a PCI function (not a mediated device's
   * region) is device memory.
   */
  map(h: NativeHandle, info: RegionInfo, region: number, offset: number, length: number): Mapping {
    checkRange('map', info, offset, length, Math.ceil(info.size / PAGE_SIZE) * PAGE_SIZE, this.#bdf);
    if (length === 0) throw new ArgRangeError('map: length 0: a mapping must cover at least one byte');
    if (!info.mappable) {
      throw new VfioError({
        message: `region ${region} of ${this.#bdf} does not support mmap`,
        code: 'ENOTMAPPABLE',
        op: 'mmap',
        path: this.#path,
        bdf: this.#bdf,
        hint: 'access it through read()/write() on the device fd instead',
      });
    }
    return Mapping.fromFd(native.fdOf(h), info.offset + offset, length, {
      writable: info.writable,
      path: this.#path,
      bdf: this.#bdf,
      deviceMemory: region < VFIO_PCI_ROM_REGION_INDEX && !isMdevUuid(this.#bdf),
    });
  }

  #denied(op: string, info: RegionInfo, what: string): VfioError {
    return new VfioError({
      message: `region ${info.index} of ${this.#bdf} is not ${what}`,
      code: 'EACCES',
      errno: 13,
      op,
      path: this.#path,
      bdf: this.#bdf,
    });
  }
}
