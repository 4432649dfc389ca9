/**
 * The DMA record both IOMMU backends share: requests checked before they reach the kernel (type1's
 * VFIO_IOMMU_MAP_DMA / VFIO_IOMMU_UNMAP_DMA on a Container, iommufd's IOMMU_IOAS_MAP /
 * IOMMU_IOAS_UNMAP on an Ioas), the exact record of what is mapped (an interval map over IOVA
 * space), and the kernel's failures with the backend's hints. Each Container and Ioas owns one
 * DmaState; what differs between them is their DmaHost.
 */
import { checkInteger } from '../base/checks';
import { ArgRangeError, ArgTypeError } from '../base/error';

import { VfioError } from '../base/native-errors';
import { hex } from '../base/values';
import { DMA_HANDLE, span, type DmaMapping, type DmaMapRequest, type DmaMemory } from './dma-types';
import type { IommuInfo, IovaRange } from './uapi';

export { DMA_HANDLE, span, type DmaMapping, type DmaMapRequest, type DmaMemory };

function memoryName(m: DmaMemory): string {
  return m.dmaName ?? 'memory';
}

function describe(m: DmaMapping): string {
  return `${span(m.iova, m.size)} (${m.size} bytes of ${memoryName(m.memory)} from offset ${hex(m.offset)})`;
}

function checkFlag(op: string, what: string, v: unknown): boolean {
  if (v === undefined) return true;
  if (typeof v !== 'boolean') throw new ArgTypeError(`${op}: ${what} must be a boolean, got ${typeof v}`);
  return v;
}

/** The IOMMU's smallest page: the lowest bit of iova_pgsizes. */
export function minPageSize(pgsizes: bigint): number {
  if (pgsizes === 0n) return 4096;
  return Number(pgsizes & -pgsizes);
}

/** The IOVA ranges of an IommuInfo, or one range covering everything when the kernel has none. */
export function iovaRangesOf(info: IommuInfo): IovaRange[] {
  const cap = info.caps.find((c) => c.kind === 'iova-ranges');
  return cap && cap.kind === 'iova-ranges' ? cap.ranges : [{ start: 0n, end: 0xffff_ffff_ffff_ffffn }];
}

/** What every map must respect, as the backend learnt it from the kernel. */
export interface DmaLimits {
  /** iova, size and offset must be multiples of this (a power of two). */
  readonly pageSize: number;
  /** Where `pageSize` comes from, for the alignment error's hint (`iova_pgsizes is 0x...`). */
  readonly pageSizeSource: string;
  /** The inclusive IOVA ranges a mapping must lie in. */
  readonly iovaRanges: readonly IovaRange[];
}

/** What the record knows of a kernel failure, for a backend's hint. */
export interface DmaFailure {
  /** The errno name (ENOMEM, ENOSPC, EINVAL, ...). */
  readonly code: string;
  readonly mapping: DmaMapping;
  /** Bytes the record held before this map. */
  readonly mappedBytes: number;
  /** Mappings the record held before this map. */
  readonly mappingCount: number;
}

/** What DmaState needs from its owner (a type1 Container or an iommufd Ioas). */
export interface DmaHost {
  readonly path: string;
  /** What owns the record, in messages: `container`, `IOAS 2`. */
  readonly noun: string;
  /** The ioctl names in errors. */
  readonly mapOp: string;
  readonly unmapOp: string;
  /** The limits, or null when nothing can be mapped yet (type1 before its IOMMU type is set). */
  limits(): DmaLimits | null;
  /** Why limits() is null and what to do: the ENOIOMMU error's message and hint. */
  readonly notReady: { readonly message: string; readonly hint: string };
  /** The backend's hint for a map the kernel refused, or undefined for the kernel's own. */
  kernelHint(f: DmaFailure): string | undefined;
  map(m: DmaMapping): void;
  /** map() on the thread pool. */
  mapAsync(m: DmaMapping): Promise<void>;
  unmap(iova: number, size: number): number;
}

/**
 * The exact record of a container's DMA mappings: disjoint, sorted by IOVA, with binary search.
 * Nothing reaches the kernel that the record cannot account for.
 */
export class DmaState {
  readonly #host: DmaHost;
  /** Sorted by iova; disjoint. */
  readonly #maps: DmaMapping[] = [];
  /** Asynchronous maps the kernel has not answered yet: no other map may overlap them. */
  readonly #pending = new Set<DmaMapping>();
  #bytes = 0;

  constructor(host: DmaHost) {
    this.#host = host;
  }

  /** Mappings in IOVA order. */
  list(): DmaMapping[] {
    return this.#maps.slice();
  }

  /** Bytes mapped. */
  get mappedBytes(): number {
    return this.#bytes;
  }

  /** Index of the first mapping whose end is above `iova`. */
  #firstEndingAfter(iova: number): number {
    const a = this.#maps;
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid].iova + a[mid].size <= iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #error(op: string, code: string, message: string, hint?: string, errno?: number): VfioError {
    const init = { message: `${op}: ${message}`, code, op, path: this.#host.path } as const;
    return new VfioError({
      ...init,
      ...(hint !== undefined ? { hint } : {}),
      ...(errno !== undefined ? { errno } : {}),
    });
  }

  /** The limits, or the error for an owner that cannot map yet (type1 without an IOMMU type). */
  #limits(op: string): DmaLimits {
    const limits = this.#host.limits();
    if (limits === null)
      throw this.#error(op, 'ENOIOMMU', this.#host.notReady.message, this.#host.notReady.hint);
    return limits;
  }

  #checkAligned(op: string, limits: DmaLimits, fields: [string, number][]): void {
    const page = limits.pageSize;
    for (const [what, v] of fields) {
      if (v % page !== 0) {
        throw this.#error(
          op,
          'EALIGN',
          `${what} ${hex(v)} is not aligned to the IOMMU page size ${hex(page)} (${page} bytes)`,
          `iova, size and offset must be multiples of ${page}; ${limits.pageSizeSource}`,
        );
      }
    }
  }

  /** Validate and map; the record changes only when the kernel agreed. */
  map(req: DmaMapRequest): void {
    const m = this.#prepare(req);
    try {
      this.#host.map(m);
    } catch (e) {
      throw this.#kernelError(e, m);
    }
    this.#record(m);
  }

  /**
   * {@link map} with the ioctl on the libuv thread pool (pinning a large guest RAM takes the
   * kernel long). The request is checked at once; until the kernel answers, no other map may
   * overlap it, and the record holds it only once the kernel accepted it.
   */
  async mapAsync(req: DmaMapRequest): Promise<void> {
    const m = this.#prepare(req);
    this.#pending.add(m);
    try {
      await this.#host.mapAsync(m);
    } catch (e) {
      throw this.#kernelError(e, m);
    } finally {
      this.#pending.delete(m);
    }
    this.#record(m);
  }

  #record(m: DmaMapping): void {
    this.#maps.splice(this.#firstEndingAfter(m.iova), 0, m);
    this.#bytes += m.size;
  }

  /** The mapping `req` asks for, once every check passed. */
  #prepare(req: DmaMapRequest): DmaMapping {
    const op = this.#host.mapOp;
    if (req === null || typeof req !== 'object')
      throw new ArgTypeError(`${op}: the request must be an object`);
    const { iova, size, offset = 0 } = req;
    checkInteger(iova, `${op}: iova`);
    checkInteger(size, `${op}: size`);
    checkInteger(offset, `${op}: offset`);
    const read = checkFlag(op, 'read', req.read);
    const write = checkFlag(op, 'write', req.write);
    const memory = req.memory;
    if (memory === null || typeof memory !== 'object' || typeof memory[DMA_HANDLE] !== 'function') {
      throw new ArgTypeError(`${op}: memory must be guest RAM (GuestRam) or a Mapping this package made`);
    }
    if (!read && !write) throw new ArgRangeError(`${op}: read and write cannot both be false`);
    const limits = this.#limits(op);
    if (size === 0) {
      throw this.#error(
        op,
        'EZEROSIZE',
        `size 0 at iova ${hex(iova)}: a mapping must cover at least one page`,
      );
    }
    this.#checkAligned(op, limits, [
      ['iova', iova],
      ['size', size],
      ['offset', offset],
    ]);
    if (offset + size > memory.length) {
      throw new ArgRangeError(
        `${op}: offset ${hex(offset)} size ${hex(size)} is outside ${memoryName(memory)} (length ${hex(memory.length)})`,
      );
    }
    this.#checkIovaRange(op, limits, iova, size);
    const i = this.#firstEndingAfter(iova);
    const hit = this.#maps[i];
    if (hit !== undefined && hit.iova < iova + size) {
      throw this.#error(
        op,
        'EOVERLAP',
        `${span(iova, size)} overlaps the existing mapping ${describe(hit)}`,
        'unmap it first (unmapDma), or map somewhere else',
      );
    }
    for (const p of this.#pending) {
      if (p.iova < iova + size && iova < p.iova + p.size) {
        throw this.#error(
          op,
          'EOVERLAP',
          `${span(iova, size)} overlaps the mapping ${describe(p)} in flight`,
        );
      }
    }
    return Object.freeze({ iova, size, memory, offset, read, write });
  }

  #checkIovaRange(op: string, limits: DmaLimits, iova: number, size: number): void {
    const ranges = limits.iovaRanges;
    const first = BigInt(iova);
    const last = first + BigInt(size) - 1n;
    if (ranges.some((r) => r.start <= first && last <= r.end)) return;
    const touched = ranges.find((r) => r.start <= last && first <= r.end);
    const list = ranges.map((r) => `[${hex(r.start)}, ${hex(r.end)}]`).join(', ');
    const where = touched
      ? `runs out of the IOVA range [${hex(touched.start)}, ${hex(touched.end)}]`
      : `lies in no IOVA range`;
    throw this.#error(
      op,
      'EIOVARANGE',
      `${span(iova, size)} ${where}`,
      `the IOMMU accepts only ${list} (gaps are reserved, e.g. the MSI window)`,
    );
  }

  /** The kernel's error with its errno kept, the mapping named, and the backend's hint. */
  #kernelError(e: unknown, m: DmaMapping): unknown {
    if (!(e instanceof VfioError) || e.errno === undefined) return e;
    const base = `${e.message.split('\n')[0]}: ${describe(m)}`;
    const hint =
      this.#host.kernelHint({
        code: e.code,
        mapping: m,
        mappedBytes: this.#bytes,
        mappingCount: this.#maps.length,
      }) ?? e.hint;
    return new VfioError({
      message: base,
      code: e.code,
      op: e.op,
      errno: e.errno,
      path: this.#host.path,
      ...(hint !== undefined ? { hint } : {}),
    });
  }

  /**
   * Unmap [iova, iova + size), which must be exactly one or more whole recorded mappings with no
   * gap between them. Returns the bytes the kernel unmapped.
   */
  unmap(iova: number, size: number): number {
    const op = this.#host.unmapOp;
    checkInteger(iova, `${op}: iova`);
    checkInteger(size, `${op}: size`);
    const limits = this.#limits(op);
    if (size === 0) throw this.#error(op, 'EZEROSIZE', `size 0 at iova ${hex(iova)}`);
    this.#checkAligned(op, limits, [
      ['iova', iova],
      ['size', size],
    ]);
    const end = iova + size;
    const i = this.#firstEndingAfter(iova);
    let j = i;
    let at = iova;
    while (at < end) {
      const m = this.#maps[j];
      if (m === undefined || m.iova > at) {
        const gapEnd = m === undefined ? end : Math.min(m.iova, end);
        throw this.#error(
          op,
          'ENOTMAPPED',
          `${span(iova, size)} is not exactly whole mappings: ${span(at, gapEnd - at)} is not mapped`,
          'unmap exactly what was mapped; dmaMappings() lists it',
        );
      }
      if (m.iova < at || m.iova + m.size > end) {
        throw this.#error(
          op,
          'ENOTMAPPED',
          `${span(iova, size)} would split the mapping ${describe(m)}`,
          'unmap exactly what was mapped; dmaMappings() lists it',
        );
      }
      at = m.iova + m.size;
      j++;
    }
    const unmapped = this.#host.unmap(iova, size);
    const removed = this.#maps.splice(i, j - i);
    for (const m of removed) this.#bytes -= m.size;
    if (unmapped !== size) {
      throw this.#error(
        op,
        'EDMASTATE',
        `the kernel unmapped ${unmapped} of the ${size} bytes recorded at ${span(iova, size)}`,
        `something else changed the mappings of this ${this.#host.noun}; the record dropped them`,
      );
    }
    return unmapped;
  }

  /** Drop the record without unmapping: the kernel already released every mapping. */
  forget(): void {
    this.#maps.length = 0;
    this.#bytes = 0;
  }

  /** Unmap every recorded mapping, last first; the first failure is thrown after trying them all. */
  unmapAll(): void {
    let first: unknown;
    for (const m of this.#maps.slice().reverse()) {
      try {
        this.unmap(m.iova, m.size);
      } catch (e) {
        first ??= e;
      }
    }
    this.#maps.length = 0;
    this.#bytes = 0;
    if (first !== undefined) throw first;
  }
}
