/**
 * Device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_START/STOP/REPORT): the device records the
 * pages its DMA writes within given IOVA ranges, for the dirty-page tracking of a live migration.
 * Offered by some migration drivers (mtty accepts it and never writes memory); probe first.
 */
import { ArgRangeError } from '../base/error';
import { VfioError } from '../base/native-errors';
import { native } from '../native';
import type { Device } from './device';
import {
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
} from './migration-uapi';

/** One IOVA range to log. */
export interface DmaLogRange {
  /** The IO virtual address the range starts at; a multiple of the logging page size. */
  readonly iova: bigint;
  /** The range's length in bytes; a non-zero multiple of the logging page size. */
  readonly length: bigint;
}

function isPow2(v: bigint): boolean {
  return v > 0n && (v & (v - 1n)) === 0n;
}

/** DMA logging on an open device. */
export class DmaLogging {
  /** The device whose DMA writes are logged; it must stay open while logging runs. */
  readonly device: Device;
  #pageSize: bigint | null = null;

  constructor(device: Device) {
    this.device = device;
  }

  /** True when the device offers DMA logging (a PROBE of START with SET). */
  probe(): boolean {
    try {
      native.vfioDeviceFeature(
        this.device._handle,
        VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
        undefined,
        0,
      );
      return true;
    } catch (e) {
      if (e instanceof VfioError && (e.code === 'ENOTTY' || e.code === 'EINVAL' || e.code === 'EOPNOTSUPP')) {
        return false;
      }
      throw e;
    }
  }

  /** The page size the device chose at start(), or null while not logging. */
  get pageSize(): bigint | null {
    return this.#pageSize;
  }

  /**
   * Start logging writes into `ranges` at `pageSize` granularity (a hint; the device may pick
   * another, which is returned). Ranges must be page-aligned and must not overlap.
   */
  start(ranges: readonly DmaLogRange[], pageSize = 4096n): bigint {
    if (ranges.length === 0) throw new ArgRangeError('DMA logging needs at least one range');
    if (!isPow2(pageSize)) throw new ArgRangeError(`page size ${pageSize} is not a power of two`);
    const flat = new BigUint64Array(ranges.length * 2);
    ranges.forEach((r, i) => {
      if (r.iova % pageSize !== 0n || r.length % pageSize !== 0n || r.length === 0n) {
        throw new ArgRangeError(
          `range ${i} (iova 0x${r.iova.toString(16)}, length 0x${r.length.toString(16)}) is not whole pages of ${pageSize}`,
        );
      }
      flat[2 * i] = r.iova;
      flat[2 * i + 1] = r.length;
    });
    this.#pageSize = native.vfioDmaLoggingStart(this.device._handle, pageSize, flat);
    return this.#pageSize;
  }

  /** Stop logging. */
  stop(): void {
    native.vfioDeviceFeature(
      this.device._handle,
      VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
      undefined,
      0,
    );
    this.#pageSize = null;
  }

  /**
   * The pages written in [iova, iova + length) since the last report (reading clears them), as the
   * IOVAs of their first bytes.
   */
  report(iova: bigint, length: bigint, pageSize = 4096n): bigint[] {
    if (!isPow2(pageSize) || pageSize < 4096n) {
      throw new ArgRangeError(`report page size ${pageSize} is not a power of two of at least 4096`);
    }
    const pages = (length + pageSize - 1n) / pageSize;
    const bitmap = new BigUint64Array(Number((pages + 63n) / 64n));
    native.vfioDmaLoggingReport(this.device._handle, iova, length, pageSize, bitmap);
    const dirty: bigint[] = [];
    bitmap.forEach((word, w) => {
      for (let b = 0n; word !== 0n && b < 64n; b++) {
        if ((word >> b) & 1n) dirty.push(iova + (BigInt(w) * 64n + b) * pageSize);
      }
    });
    return dirty;
  }
}
