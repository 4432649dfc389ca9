/**
 * `read`, `write` and `dump` of a vfio-pci region (a BAR, config space or the ROM) at a width the
 * operator names. Each value is exactly one access of that width: one load or store through a
 * mapping, or one pread/pwrite of that size on the device fd. A dump never batches into wider
 * accesses (a block pread would: the kernel splits it as it likes), so registers that care about
 * width answer as they would to a driver.
 */
import type { AccessSize } from '../types';
import type { Device } from '../vfio/device';
import { VfioError } from '../base/native-errors';
import { PAGE_SIZE, type Mapping } from '../vfio/mapping';
import type { SysfsOptions } from '../vfio/sysfs';
import type { RegionInfo } from '../vfio/uapi';
import { UsageError } from './errors';
import { REGION_NAMES } from './names';
import { configSize, readResources } from './pci-sysfs';

export type Via = 'auto' | 'map' | 'fd' | 'sysfs';

const CONFIG = 7;

/**
 * A region from the command line: bar0..bar5 (or 0..5), rom, config.
 * @throws UsageError
 */
export function parseRegion(arg: string): number {
  const s = arg.trim().toLowerCase();
  if (/^[0-5]$/.test(s)) return Number(s);
  const i = s === 'cfg' ? CONFIG : REGION_NAMES.indexOf(s);
  if (i < 0 || i > CONFIG) {
    throw new UsageError(
      `${JSON.stringify(arg)} is not a region`,
      'name one of bar0..bar5 (or 0..5), rom, config',
    );
  }
  return i;
}

/**
 * A non-negative integer from the command line, decimal or 0x-hex.
 * @throws UsageError
 */
export function parseOffset(arg: string, what: string): number {
  const s = arg.trim();
  const v = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^[0-9]+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(v))
    throw new UsageError(`${what} ${JSON.stringify(arg)} is not a non-negative integer`);
  return v;
}

/**
 * A value that must fit in `width` bytes (bigint for 8).
 * @throws UsageError
 */
export function parseValue(arg: string, width: AccessSize): number | bigint {
  const s = arg.trim();
  if (!/^(0x[0-9a-f]+|[0-9]+)$/i.test(s)) {
    throw new UsageError(`value ${JSON.stringify(arg)} is not a non-negative integer (decimal or 0x-hex)`);
  }
  const v = BigInt(s);
  if (v >= 1n << BigInt(8 * width)) {
    throw new UsageError(
      `value ${s} does not fit in ${width} byte${width > 1 ? 's' : ''} (max 0x${((1n << BigInt(8 * width)) - 1n).toString(16)})`,
      'give a smaller value or a wider --width',
    );
  }
  return width === 8 ? v : Number(v);
}

/**
 * The width from the command line (commander has checked it is one of the choices).
 */
export function parseWidth(arg: string): AccessSize {
  const w = Number(arg);
  if (w !== 1 && w !== 2 && w !== 4 && w !== 8) throw new UsageError(`width ${arg} is not 1, 2, 4 or 8`);
  return w;
}

/**
 * The size of a region as sysfs knows it, so a bad offset is refused before VFIO is touched.
 * @throws UsageError when the device does not implement the region
 */
export function sysfsRegionSize(bdf: string, region: number, opts: SysfsOptions): number {
  if (region === CONFIG) return configSize(bdf, opts);
  const r = readResources(bdf, opts).find((x) => x.index === region);
  if (!r)
    throw new UsageError(
      `${bdf} has no ${REGION_NAMES[region]}`,
      'see `vfio-bridge info BDF` for its regions',
    );
  return r.size;
}

/** @throws UsageError unless [offset, offset + length) lies inside a region of `size` bytes. */
export function checkSpan(region: number, offset: number, length: number, size: number): void {
  if (offset >= size || length > size - offset) {
    throw new UsageError(
      `offset 0x${offset.toString(16)} + ${length} byte${length === 1 ? '' : 's'} is past the end of ` +
        `${REGION_NAMES[region]} (size 0x${size.toString(16)})`,
    );
  }
}

/**
 * @throws UsageError unless `offset` is a multiple of `width`. An unaligned access is not one access:
 * the kernel's pread/pwrite splits it into narrower ones, and the CPU splits a load that crosses the
 * device's dword or qword boundary into two bus transactions.
 */
export function checkAligned(offset: number, width: AccessSize): void {
  if (offset % width !== 0) {
    throw new UsageError(
      `offset 0x${offset.toString(16)} is not a multiple of the width (${width}): the access would be split`,
      `start at 0x${(offset - (offset % width)).toString(16)}, or give a narrower --width`,
    );
  }
}

/** Where one region is accessed: a mapping of the pages around the range, or the fd. */
export interface RegionPort extends Disposable {
  /** A mapping or the fd of the VFIO device, or sysfs (sysfs-access.ts) for a device on any driver. */
  readonly via: 'map' | 'fd' | 'sysfs';
  read(offset: number, width: AccessSize): number | bigint;
  write(offset: number, width: AccessSize, value: number | bigint): void;
  /** `count` consecutive values, each one access of `width`. */
  readMany(offset: number, count: number, width: AccessSize): (number | bigint)[];
}

function mappableArea(
  info: RegionInfo,
  offset: number,
  length: number,
): { offset: number; size: number } | null {
  if (!info.mappable) return null;
  const sparse = info.caps.find((c) => c.kind === 'sparse-mmap');
  const areas = sparse ? sparse.areas : [{ offset: 0, size: Math.ceil(info.size / PAGE_SIZE) * PAGE_SIZE }];
  return areas.find((a) => offset >= a.offset && offset + length <= a.offset + a.size) ?? null;
}

/**
 * A port on `[offset, offset + length)` of `region`.
 * @throws VfioError ENOTMAPPABLE when `via` is 'map' and the range is not inside a mappable area
 */
export function openPort(
  d: Device,
  region: number,
  offset: number,
  length: number,
  via: Exclude<Via, 'sysfs'>,
): RegionPort {
  const info = d.regionInfo(region);
  checkSpan(region, offset, length, info.size);
  const area = via === 'fd' ? null : mappableArea(info, offset, length);
  if (area === null && via === 'map') {
    throw new VfioError({
      message: `${REGION_NAMES[region]} of ${d.bdf} cannot be mapped at 0x${offset.toString(16)}+${length}`,
      code: 'ENOTMAPPABLE',
      op: 'mmap',
      bdf: d.bdf,
      hint: info.mappable
        ? 'the range is outside the sparse mmap areas (the MSI-X table is often one): use --via fd'
        : 'the kernel offers this region through the fd only: use --via fd',
    });
  }
  if (area === null) {
    return {
      via: 'fd',
      read: (off, w) => d.read(region, off, w),
      write: (off, w, v) => d.write(region, off, w, v),
      readMany: (off, count, w) => {
        const out: (number | bigint)[] = [];
        for (let i = 0; i < count; i++) out.push(d.read(region, off + i * w, w));
        return out;
      },
      [Symbol.dispose]: () => {},
    };
  }
  const start = Math.floor(offset / PAGE_SIZE) * PAGE_SIZE;
  const end = Math.min(area.offset + area.size, Math.ceil((offset + length) / PAGE_SIZE) * PAGE_SIZE);
  const m: Mapping = d.map(region, start, end - start);
  return {
    via: 'map',
    read: (off, w) => m.read(off - start, w),
    write: (off, w, v) => m.write(off - start, w, v),
    readMany: (off, count, w) => Array.from(m.readBlock(off - start, count, w) as ArrayLike<number | bigint>),
    [Symbol.dispose]: () => m.close(),
  };
}

/** A value as the CLI prints it: 0x and exactly two hex digits per byte. */
export function hexValue(v: number | bigint, width: AccessSize): string {
  return `0x${v.toString(16).padStart(width * 2, '0')}`;
}

/**
 * The dump's text: like QEMU's `xp /Nx`, one line per 16 bytes with the region offset first, then
 * the values at the access width, then the bytes as ASCII (little-endian, `.` for the unprintable).
 */
export function formatDumpLines(
  offset: number,
  width: AccessSize,
  values: readonly (number | bigint)[],
): string {
  const perLine = 16 / width;
  const digits = Math.max(8, (offset + values.length * width).toString(16).length);
  const lines: string[] = [];
  for (let i = 0; i < values.length; i += perLine) {
    const chunk = values.slice(i, i + perLine);
    let ascii = '';
    for (const v of chunk) {
      let b = BigInt(v);
      for (let k = 0; k < width; k++, b >>= 8n) {
        const c = Number(b & 0xffn);
        ascii += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : '.';
      }
    }
    const cells = chunk.map((v) => hexValue(v, width)).join(' ');
    const pad = ' '.repeat((perLine - chunk.length) * (width * 2 + 3));
    lines.push(`${(offset + i * width).toString(16).padStart(digits, '0')}: ${cells}${pad}  |${ascii}|`);
  }
  return lines.join('\n') + '\n';
}
