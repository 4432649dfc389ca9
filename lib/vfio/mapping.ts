import { ArgRangeError, ArgTypeError } from '../base/error';
import { native, onNativeLoad, type NativeMappingHandle } from '../native';
import { DMA_HANDLE } from './dma-types';
import '../base/native-errors'; // registers the error factory before any native call can fail
import { watchSigbusListeners } from './sigbus-watch';
import type { AccessSize } from '../types';

/** A typed array a block access can move elements in and out of. */
export type BlockArray = Uint8Array | Uint16Array | Uint32Array | BigUint64Array;

/** Options for {@link Mapping.fromFd}. */
export interface MappingOptions {
  /** Map with PROT_WRITE as well as PROT_READ (default true). */
  writable?: boolean;
  /** Device node or file, reported in errors. */
  path?: string;
  /** PCI address, reported in errors. */
  bdf?: string;
  /**
   * The fd's pages are device memory, which the kernel maps without struct pages (VM_IO,
   * VM_PFNMAP): a vfio-pci BAR. Default false. See {@link Mapping.deviceMemory}.
   */
  deviceMemory?: boolean;
}

const TWO_32 = 0x1_0000_0000;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

function describe(v: unknown): string {
  return typeof v === 'bigint' ? `${v}n` : typeof v === 'string' ? JSON.stringify(v) : String(v);
}

function checkSafeInteger(what: string, v: unknown): number {
  if (typeof v !== 'number') throw new ArgTypeError(`${what} must be a number, got ${typeof v}`);
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new ArgRangeError(`${what} ${describe(v)} is not an integer in [0, Number.MAX_SAFE_INTEGER]`);
  }
  return v;
}

function checkWidth(op: string, width: unknown): AccessSize {
  if (width !== 1 && width !== 2 && width !== 4 && width !== 8) {
    throw new ArgRangeError(`${op}: width ${describe(width)} is not 1, 2, 4 or 8`);
  }
  return width;
}

// The operand area for the single accessors (see NativeBinding.useMappingScratch): W[0] = slot,
// W[2..3] = offset, W[4..5] = value (BIG[2] as a bigint). Allocated here rather than by the addon
// so that the views are constants made before the addon loads, which keeps each access a store
// into a known buffer; the addon adopts it on load, before any Mapping can exist.
const SCRATCH = new ArrayBuffer(24);
const W = new Uint32Array(SCRATCH);
const BIG = new BigUint64Array(SCRATCH);
onNativeLoad((binding) => binding.useMappingScratch(SCRATCH));

const ARRAY_FOR_WIDTH = {
  1: Uint8Array,
  2: Uint16Array,
  4: Uint32Array,
  8: BigUint64Array,
} as const;

/**
 * A MAP_SHARED mapping of an fd: a device region (see Device.map), a memfd, or a file.
 *
 * Every access is exactly one load or store instruction of its width (1, 2, 4 or 8 bytes), at any
 * offset inside the mapping, aligned or not: never a memcpy, never split, never widened. Values are
 * unsigned and little-endian; 8-byte values are `bigint` (or two 32-bit halves with
 * {@link Mapping.read64Pair} / {@link Mapping.write64Pair}, which avoid allocating a BigInt).
 *
 * Errors: a bad offset or width is a `RangeError` naming the offset, the width and the limit, and
 * touches nothing; a wrong type is a `TypeError`; use after close is a `VfioError` with code
 * `'ECLOSED'`; an access that faults (vfio-pci revoked the mapping) is a `VfioError` with code
 * `'SIGBUS'` and the process carries on.
 *
 * The SIGBUS guard stays the process's handler: it is re-asserted each time a mapping is created
 * and each time a `process.on('SIGBUS')` listener is added or removed (Node replaces the handler
 * with libuv's for the first listener and puts SIG_DFL back after the last). Whatever handler it
 * displaced becomes the one it chains to, so listeners still get every SIGBUS that is not an
 * accessor's fault. Native code that calls sigaction(SIGBUS) itself, outside `process` listeners,
 * is taken over again only at the next mapping.
 *
 * The mapping is unmapped by {@link Mapping.close}, when it is garbage-collected, or when its
 * environment (thread) exits. It does not own the fd: close the fd whenever convenient.
 */
export class Mapping implements Disposable {
  /** Length in bytes. */
  readonly length: number;
  /**
   * True for a mapping of device memory (a vfio-pci BAR, as Device.map makes it): it has no pages
   * an IOMMU could pin, so iommufd refuses to map it for DMA (type1 maps it).
   */
  readonly deviceMemory: boolean;
  readonly #handle: NativeMappingHandle;
  readonly #slot: number;
  #closed = false;

  private constructor(handle: NativeMappingHandle, slot: number, length: number, deviceMemory: boolean) {
    this.#handle = handle;
    this.#slot = slot;
    this.length = length;
    this.deviceMemory = deviceMemory;
  }

  /**
   * Map `length` bytes of `fd` from `offset` (MAP_SHARED). The offset need not be page-aligned.
   * @throws VfioError from mmap (EINVAL carries a hint about mappable areas), RangeError, TypeError
   */
  static fromFd(fd: number, offset: number, length: number, opts: MappingOptions = {}): Mapping {
    checkSafeInteger('fd', fd);
    checkSafeInteger('offset', offset);
    checkSafeInteger('length', length);
    if (length === 0) throw new ArgRangeError('length 0: a mapping must cover at least one byte');
    const writable = opts.writable ?? true;
    if (typeof writable !== 'boolean') throw new ArgTypeError('writable must be a boolean');
    const deviceMemory = opts.deviceMemory ?? false;
    if (typeof deviceMemory !== 'boolean') throw new ArgTypeError('deviceMemory must be a boolean');
    watchSigbusListeners();
    const { handle, slot } = native.mmap(fd, offset, length, writable, opts.path, opts.bdf);
    return new Mapping(handle, slot, length, deviceMemory);
  }

  /**
   * Host virtual address of the mapping's first byte: what a KVM memory slot or a DMA map is given.
   * Such users must be torn down before the mapping closes.
   * @throws VfioError ECLOSED after close
   */
  get hostAddress(): bigint {
    return native.mapAddress(this.#handle);
  }

  /** The native handle, for Container.mapDma (peer-to-peer DMA into a BAR). @internal */
  [DMA_HANDLE](): NativeMappingHandle {
    return this.#handle;
  }

  /** True once {@link Mapping.close} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  // Offsets below 2^32 take one store (W[2]); the addon clears the high word after each access.
  #offset(op: string, off: number, width: number): void {
    if (typeof off !== 'number') throw new ArgTypeError(`${op}: offset must be a number, got ${typeof off}`);
    if (!Number.isSafeInteger(off) || off < 0) {
      throw new ArgRangeError(
        `${op}: offset ${describe(off)} width ${width} is outside the mapping (length ${this.length})`,
      );
    }
    W[2] = off % TWO_32;
    W[3] = Math.floor(off / TWO_32);
  }

  #value(op: string, v: number, width: 1 | 2 | 4): never {
    if (typeof v !== 'number') throw new ArgTypeError(`${op}: value must be a number, got ${typeof v}`);
    throw new ArgRangeError(`${op}: value ${describe(v)} does not fit in ${width} byte(s) unsigned`);
  }

  /** Load 1 byte. */
  read8(off: number): number {
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.read8', off, 1);
    W[0] = this.#slot;
    native.mapRead8();
    return W[4];
  }

  /** Load 2 bytes. */
  read16(off: number): number {
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.read16', off, 2);
    W[0] = this.#slot;
    native.mapRead16();
    return W[4];
  }

  /** Load 4 bytes. */
  read32(off: number): number {
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.read32', off, 4);
    W[0] = this.#slot;
    native.mapRead32();
    return W[4];
  }

  /** Load 8 bytes as a bigint. */
  read64(off: number): bigint {
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.read64', off, 8);
    W[0] = this.#slot;
    native.mapRead64();
    return BIG[2];
  }

  /** Load 8 bytes in one access into `out[0]` (low half) and `out[1]` (high half). */
  read64Pair(off: number, out: Uint32Array): void {
    if (!(out instanceof Uint32Array) || out.length < 2) {
      throw new ArgTypeError('mapping.read64Pair: out must be a Uint32Array of length >= 2');
    }
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.read64Pair', off, 8);
    W[0] = this.#slot;
    native.mapRead64();
    out[0] = W[4];
    out[1] = W[5];
  }

  /** Store 1 byte. */
  write8(off: number, v: number): void {
    if ((v & 0xff) !== v) this.#value('mapping.write8', v, 1);
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.write8', off, 1);
    W[0] = this.#slot;
    W[4] = v;
    native.mapWrite8();
  }

  /** Store 2 bytes. */
  write16(off: number, v: number): void {
    if ((v & 0xffff) !== v) this.#value('mapping.write16', v, 2);
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.write16', off, 2);
    W[0] = this.#slot;
    W[4] = v;
    native.mapWrite16();
  }

  /** Store 4 bytes. */
  write32(off: number, v: number): void {
    if (v >>> 0 !== v) this.#value('mapping.write32', v, 4);
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.write32', off, 4);
    W[0] = this.#slot;
    W[4] = v;
    native.mapWrite32();
  }

  /** Store 8 bytes from a bigint in [0, 2^64). */
  write64(off: number, v: bigint): void {
    if (typeof v !== 'bigint')
      throw new ArgTypeError(`mapping.write64: value must be a bigint, got ${typeof v}`);
    if (v < 0n || v > U64_MAX) {
      throw new ArgRangeError(`mapping.write64: value ${v}n does not fit in 8 bytes unsigned`);
    }
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.write64', off, 8);
    W[0] = this.#slot;
    BIG[2] = v;
    native.mapWrite64();
  }

  /** Store 8 bytes, given as two 32-bit halves, in one access. */
  write64Pair(off: number, lo: number, hi: number): void {
    if (lo >>> 0 !== lo) this.#value('mapping.write64Pair', lo, 4);
    if (hi >>> 0 !== hi) this.#value('mapping.write64Pair', hi, 4);
    if (off >>> 0 === off) W[2] = off;
    else this.#offset('mapping.write64Pair', off, 8);
    W[0] = this.#slot;
    W[4] = lo;
    W[5] = hi;
    native.mapWrite64();
  }

  /** Load `size` bytes: a bigint when size is 8, a number otherwise. */
  read(off: number, size: AccessSize): number | bigint {
    switch (size) {
      case 1:
        return this.read8(off);
      case 2:
        return this.read16(off);
      case 4:
        return this.read32(off);
      case 8:
        return this.read64(off);
      default:
        throw new ArgRangeError(`mapping.read: size ${describe(size)} is not 1, 2, 4 or 8`);
    }
  }

  /** Store `size` bytes: `v` must be a bigint when size is 8, a number otherwise. */
  write(off: number, size: AccessSize, v: number | bigint): void {
    switch (size) {
      case 1:
      case 2:
      case 4:
        if (typeof v !== 'number')
          throw new ArgTypeError(`mapping.write: a ${size}-byte value must be a number`);
        if (size === 1) this.write8(off, v);
        else if (size === 2) this.write16(off, v);
        else this.write32(off, v);
        return;
      case 8:
        if (typeof v !== 'bigint') throw new ArgTypeError('mapping.write: an 8-byte value must be a bigint');
        this.write64(off, v);
        return;
      default:
        throw new ArgRangeError(`mapping.write: size ${describe(size)} is not 1, 2, 4 or 8`);
    }
  }

  /**
   * Load `count` elements of `width` bytes from `off` in one native call, each element one access of
   * that width. Returns `into`, or a new typed array of the width's element type (Uint8Array,
   * Uint16Array, Uint32Array, BigUint64Array). `into` must be that type, or a Uint8Array that
   * receives the bytes.
   */
  readBlock(off: number, count: number, width: 1, into?: Uint8Array): Uint8Array;
  readBlock(off: number, count: number, width: 2, into?: Uint16Array | Uint8Array): Uint16Array | Uint8Array;
  readBlock(off: number, count: number, width: 4, into?: Uint32Array | Uint8Array): Uint32Array | Uint8Array;
  readBlock(
    off: number,
    count: number,
    width: 8,
    into?: BigUint64Array | Uint8Array,
  ): BigUint64Array | Uint8Array;
  readBlock(off: number, count: number, width: AccessSize, into?: BlockArray): BlockArray;
  readBlock(off: number, count: number, width: AccessSize, into?: BlockArray): BlockArray {
    checkWidth('mapping.readBlock', width);
    checkSafeInteger('count', count);
    const target = into ?? new ARRAY_FOR_WIDTH[width](count);
    if (!(target instanceof ARRAY_FOR_WIDTH[width]) && !(target instanceof Uint8Array)) {
      throw new ArgTypeError(
        `mapping.readBlock: into must be a ${ARRAY_FOR_WIDTH[width].name} or a Uint8Array`,
      );
    }
    native.mapReadBlock(this.#handle, off, count, width, target);
    return target;
  }

  /**
   * Store every element of `data` from `off`, each element one access of `width` bytes, in one native
   * call. `data` must be the width's element type, or a Uint8Array whose length is a multiple of width.
   */
  writeBlock(off: number, data: BlockArray, width: AccessSize): void {
    checkWidth('mapping.writeBlock', width);
    if (!(data instanceof ARRAY_FOR_WIDTH[width]) && !(data instanceof Uint8Array)) {
      throw new ArgTypeError(
        `mapping.writeBlock: data must be a ${ARRAY_FOR_WIDTH[width].name} or a Uint8Array`,
      );
    }
    native.mapWriteBlock(this.#handle, off, data, width);
  }

  /** Unmap now. Idempotent; later accesses throw VfioError `'ECLOSED'`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.unmap(this.#handle);
  }

  /** Same as {@link Mapping.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The host's page size: mmap works in whole pages, and so does a VMM's direct (KVM) mapping. */
export { PAGE_SIZE } from '../base/page';

/**
 * Create an anonymous memory file (memfd_create with MFD_CLOEXEC) of `size` bytes: a stand-in for a
 * device region in tests and examples. The caller owns the fd and closes it with `fs.closeSync`.
 */
export function memfd(name: string, size: number): number {
  if (typeof name !== 'string') throw new ArgTypeError('memfd: name must be a string');
  checkSafeInteger('size', size);
  return native.memfd(name, size);
}
