/**
 * Guest RAM: a memfd mapped once into this process, shown to JavaScript as ArrayBuffers without a
 * copy, shareable with worker threads (they map the same pages), and handed by host address to the
 * IOMMU (Container.mapDma, the DMA listener) and to KVM memory slots.
 */
import { ArgRangeError, ArgTypeError, closedError } from '../base/error';
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import { markAsUntransferable } from 'node:worker_threads';

import { MemoryRegion } from '../memory';
import { ramShownBy } from '../memory/address-space';
import { native, type NativeGuestMemoryHandle } from '../native';
import { VfioError } from '../vfio';
import { DMA_HANDLE, type DmaMemory } from '../vfio/dma-types';
import { registerDmaBuffer, registerDmaRegion } from './dma-buffers';

/** Options of {@link GuestRam.create}. */
export interface GuestRamOptions {
  /** Name of the memfd (shown in /proc/PID/maps) and in messages. Default `guest-ram`. */
  name?: string;
  /**
   * Back the memory with huge pages (MFD_HUGETLB): `true` for the default huge page size, or a size
   * in bytes (2 MiB, 1 GiB). The size must be a multiple of it, and the pages must be free in the
   * pool; otherwise a VfioError `ENOHUGEPAGES` says how many are needed and how to reserve them.
   */
  hugepages?: boolean | number;
}

/** What {@link GuestRam.share} returns: post it to a worker and call {@link GuestRam.attach} there. */
export interface SharedGuestRam {
  /** The RAM's name, which the attached GuestRam takes too. */
  readonly name: string;
  /** The memfd's number: the threads of a process share their fds, so a worker maps it by number. */
  readonly fd: number;
  /** The RAM's size in bytes. */
  readonly length: number;
  /** The memfd's device number (st_dev): with `ino`, proves at attach that `fd` is still this memfd. */
  readonly dev: number;
  /** The memfd's inode number (st_ino): with `dev`, proves at attach that `fd` is still this memfd. */
  readonly ino: number;
  /** The huge page size backing the memory in bytes, or 0 for normal pages. */
  readonly hugePageSize: number;
}

const MFD_HUGETLB = 0x0004;
const MFD_HUGE_SHIFT = 26;

/** The largest ArrayBuffer this Node makes over external memory (4 GiB on Node 20). */
export const MAX_GUEST_RAM_BUFFER: number = Math.min(bufferConstants.MAX_LENGTH, 2 ** 32);

function defaultHugePageSize(): number {
  const m = /^Hugepagesize:\s+(\d+) kB$/m.exec(readText('/proc/meminfo') ?? '');
  return m ? Number(m[1]) * 1024 : 0;
}

function readText(path: string): string | undefined {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function checkSize(what: string, v: unknown): number {
  if (typeof v !== 'number') throw new ArgTypeError(`${what} must be a number, got ${typeof v}`);
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new ArgRangeError(`${what} ${String(v)} is not an integer in [0, Number.MAX_SAFE_INTEGER]`);
  }
  return v;
}

function hugepageError(size: number, page: number, cause: unknown): VfioError {
  const dir = `/sys/kernel/mm/hugepages/hugepages-${page / 1024}kB`;
  const free = readText(`${dir}/free_hugepages`)?.trim();
  const total = readText(`${dir}/nr_hugepages`)?.trim();
  const need = Math.ceil(size / page);
  const why = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
  return new VfioError({
    message: `no huge pages for ${size} bytes of guest RAM: ${need} pages of ${page} bytes needed (${why})`,
    code: 'ENOHUGEPAGES',
    op: 'memfd_create(MFD_HUGETLB)',
    ...(cause instanceof VfioError && cause.errno !== undefined ? { errno: cause.errno } : {}),
    hint:
      free === undefined
        ? `this kernel has no ${page}-byte huge page pool (${dir} is missing): pick another size or leave hugepages off`
        : `${free} of ${total} pages are free in ${dir}: reserve more with ` +
          `\`echo ${Number(total) - Number(free) + need} > ${dir}/nr_hugepages\` (as root), or leave hugepages off`,
  });
}

/**
 * Guest RAM backed by a memfd. `buffer()` gives zero-copy ArrayBuffer windows (one window holds at
 * most {@link MAX_GUEST_RAM_BUFFER} bytes, so larger RAM is shown in pieces); `region()` makes a
 * memory-model ram region whose window is made only when the memory model first reads or writes
 * it, and which the DMA listener maps without one; `fill()` sets a range without a window;
 * `hostAddress` and `fd` are what a KVM memory slot needs. Worker threads map the same pages with
 * `share()` / `attach()`.
 *
 * `close()` detaches every buffer made (views read as empty, never as freed memory) and unmaps; the
 * pages live on while the IOMMU still maps them. It is refused while an address space shows the
 * RAM. Without close, the memory is released once the object and all its buffers are
 * garbage-collected, or when the thread exits.
 */
export class GuestRam implements DmaMemory, Disposable {
  /** The memfd's name (shown in /proc/PID/maps), also used in messages: `guest-ram` unless given. */
  readonly name: string;
  /** The RAM's size in bytes. */
  readonly length: number;
  /** The huge page size backing the memory, or 0 for normal pages. */
  readonly hugePageSize: number;
  readonly #handle: NativeGuestMemoryHandle;
  readonly #windows = new Map<string, ArrayBuffer>();
  /** The regions made by region(), held weakly: close() must see them before their windows exist. */
  readonly #regions = new Set<WeakRef<MemoryRegion>>();
  readonly #address: bigint;
  readonly #fd: number;
  readonly #dev: number;
  readonly #ino: number;
  #closed = false;

  private constructor(handle: NativeGuestMemoryHandle, name: string, hugePageSize: number) {
    this.#handle = handle;
    const info = native.guestMemoryInfo(handle);
    this.name = name;
    this.length = info.length;
    this.hugePageSize = hugePageSize;
    this.#address = info.address;
    this.#fd = info.fd;
    this.#dev = info.dev;
    this.#ino = info.ino;
  }

  /** Allocate `size` bytes of zeroed guest RAM (pages are allocated when first touched). */
  static create(size: number, opts: GuestRamOptions = {}): GuestRam {
    checkSize('guest RAM size', size);
    if (size === 0) throw new ArgRangeError('guest RAM size 0: it must hold at least one page');
    const name = opts.name ?? 'guest-ram';
    if (typeof name !== 'string') throw new ArgTypeError('name must be a string');
    const huge = opts.hugepages ?? false;
    let page = 0;
    let flags = 0;
    if (huge === true) {
      page = defaultHugePageSize();
      if (page === 0) throw hugepageError(size, 2 * 1024 * 1024, 'the kernel reports no huge page size');
      flags = MFD_HUGETLB;
    } else if (typeof huge === 'number') {
      checkSize('hugepages', huge);
      if (huge < 4096 || (huge & (huge - 1)) !== 0 || huge > 2 ** 30) {
        throw new ArgRangeError(`hugepages ${huge} is not a power of two between 4096 and 1 GiB`);
      }
      page = huge;
      flags = MFD_HUGETLB | (Math.log2(huge) << MFD_HUGE_SHIFT);
    } else if (huge !== false) {
      throw new ArgTypeError('hugepages must be a boolean or a page size in bytes');
    }
    if (page !== 0 && size % page !== 0) {
      throw new ArgRangeError(`guest RAM size ${size} is not a multiple of the huge page size ${page}`);
    }
    let handle: NativeGuestMemoryHandle;
    try {
      handle = native.guestMemoryCreate(name, size, flags);
    } catch (e) {
      if (page !== 0 && e instanceof VfioError) throw hugepageError(size, page, e);
      throw e;
    }
    return new GuestRam(handle, name, page);
  }

  /** Map guest RAM another thread created and shared (see {@link GuestRam.share}). */
  static attach(shared: SharedGuestRam): GuestRam {
    if (shared === null || typeof shared !== 'object')
      throw new ArgTypeError('attach needs what share() returned');
    const handle = native.guestMemoryAttach(shared.fd, shared.length, shared.dev, shared.ino);
    return new GuestRam(handle, shared.name, shared.hugePageSize);
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The host virtual address of byte 0 (KVM_SET_USER_MEMORY_REGION's userspace_addr). */
  get hostAddress(): bigint {
    this.#check('guestRam.hostAddress');
    return this.#address;
  }

  /** The memfd, owned by this object (closed with it). */
  get fd(): number {
    this.#check('guestRam.fd');
    return this.#fd;
  }

  /** The name used in DMA messages. */
  get dmaName(): string {
    return `guest RAM '${this.name}'`;
  }

  /**
   * A zero-copy ArrayBuffer over [offset, offset + length) (default: all of it, if it fits one
   * buffer). The same window returns the same buffer. Views of it read and write guest memory.
   */
  buffer(offset = 0, length?: number): ArrayBuffer {
    const len = this.#window('guestRam.buffer', offset, length);
    const key = `${offset}:${len}`;
    let ab = this.#windows.get(key);
    if (ab === undefined) {
      ab = native.guestMemoryBuffer(this.#handle, offset, len);
      // A transfer would move the window out from under the other views; share() is the way.
      markAsUntransferable(ab);
      registerDmaBuffer(ab, this, offset);
      this.#windows.set(key, ab);
    }
    return ab;
  }

  /**
   * A DataView over [offset, offset + length) of guest RAM. It is cut from the window of the
   * {@link MAX_GUEST_RAM_BUFFER}-sized piece of RAM that holds it, so a VMM taking a view per guest
   * address does not make (and keep, until close) a window for each.
   */
  view(offset: number, length: number): DataView {
    this.#range('guestRam.view', offset, length);
    const start = Math.floor(offset / MAX_GUEST_RAM_BUFFER) * MAX_GUEST_RAM_BUFFER;
    const size = Math.min(MAX_GUEST_RAM_BUFFER, this.length - start);
    if (offset + length <= start + size) {
      return new DataView(this.buffer(start, size), offset - start, length);
    }
    return new DataView(this.buffer(offset, length));
  }

  /**
   * A memory-model ram region over [offset, offset + size) of this RAM, to place in an address
   * space; the DMA listener maps it from this memory. Its window, `buffer(offset, size)`, is made
   * on the first access through the memory model, not here: V8 counts a window's length as
   * external memory, and a window of hundreds of MiB makes it run a full garbage collection.
   */
  region(name: string, offset = 0, size = this.length - offset): MemoryRegion {
    this.#window('guestRam.region', offset, size);
    const r = MemoryRegion.ram(name, size, () => this.buffer(offset, size));
    registerDmaRegion(r, this, offset);
    for (const w of this.#regions) if (w.deref() === undefined) this.#regions.delete(w);
    this.#regions.add(new WeakRef(r));
    return r;
  }

  /**
   * Set [offset, offset + length) of the RAM to `byte` (default 0) in place, without a window (a
   * reboot clearing RAM piece by piece makes none to keep). The pages stay where they are, so what
   * the IOMMU or KVM maps of them keeps seeing the RAM.
   */
  fill(offset: number, length: number, byte = 0): void {
    this.#range('guestRam.fill', offset, length);
    if (typeof byte !== 'number')
      throw new ArgTypeError(`guestRam.fill: byte must be a number, got ${typeof byte}`);
    if (!Number.isInteger(byte) || byte < 0 || byte > 0xff) {
      throw new ArgRangeError(`guestRam.fill: byte ${byte} is not an integer in [0, 255]`);
    }
    native.guestMemoryFill(this.#handle, offset, length, byte);
  }

  /** @internal The windows made so far (and kept until close): how many, their bytes, the largest. */
  get windowStats(): { count: number; bytes: number; largest: number } {
    let bytes = 0;
    let largest = 0;
    for (const ab of this.#windows.values()) {
      bytes += ab.byteLength;
      largest = Math.max(largest, ab.byteLength);
    }
    return { count: this.#windows.size, bytes, largest };
  }

  /** What a worker needs to map the same pages with {@link GuestRam.attach}. Valid while this is open. */
  share(): SharedGuestRam {
    this.#check('guestRam.share');
    return {
      name: this.name,
      fd: this.#fd,
      length: this.length,
      dev: this.#dev,
      ino: this.#ino,
      hugePageSize: this.hugePageSize,
    };
  }

  /** @internal */
  [DMA_HANDLE](): NativeGuestMemoryHandle {
    return this.#handle;
  }

  /**
   * Detach every buffer, unmap and close the memfd. Idempotent.
   *
   * Refused (VfioError `EBUSY`) while an open address space shows any of its regions, directly or
   * through an alias: the guest, the DMA listener and KVM slots reach the RAM through those ranges,
   * and unmapping it under them would turn a guest access into a TypeError thrown at the VMM and
   * leave KVM slots over unmapped host memory. Dropping the regions silently instead would change
   * the guest's memory map behind the VMM's back. So the order is the owner's to keep, as closing
   * a Machine does: take the regions out (or close the address spaces), then close the RAM. A region
   * that was not shown when the RAM closed shows nothing if placed later (the guest meets unassigned
   * space, reported as such).
   * @throws VfioError EBUSY naming the address spaces and regions that still show the RAM
   */
  close(): void {
    if (this.#closed) return;
    const regions = new Set<MemoryRegion>();
    for (const w of this.#regions) {
      const r = w.deref();
      if (r !== undefined) regions.add(r);
    }
    const shown = ramShownBy(new Set(this.#windows.values()), regions);
    if (shown.length > 0) {
      const where = shown.map((u) => `'${u.region}' in address space '${u.space}'`);
      throw new VfioError({
        message: `guestRam.close: guest RAM '${this.name}' is still shown as ${where.join(', ')}`,
        code: 'EBUSY',
        op: 'guestRam.close',
        hint:
          'take its regions out of the memory tree (removeSubregion, and commit an open transaction) ' +
          'or close those address spaces first; Machine.close does both in order',
      });
    }
    this.#closed = true;
    // A region whose window was never made has nothing to detach: it is told instead, so that it
    // shows nothing wherever it is placed later.
    for (const r of regions) r.releaseBacking();
    this.#regions.clear();
    native.guestMemoryClose(this.#handle, [...this.#windows.values()]);
    this.#windows.clear();
  }

  /** Same as {@link GuestRam.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Checks that `op` may touch [offset, offset + length): open, sizes, inside the RAM. With
   * `toEnd`, an undefined length means to the end of the RAM. Returns the length.
   */
  #range(op: string, offset: unknown, length: unknown, toEnd = false): number {
    this.#check(op);
    const off = checkSize('offset', offset);
    const len = toEnd && length === undefined ? this.length - off : checkSize('length', length);
    if (off > this.length || len > this.length - off) {
      throw new ArgRangeError(`${op}: offset ${off} length ${len} is outside the ${this.length}-byte RAM`);
    }
    return len;
  }

  /** {@link GuestRam.#range} for a window (to the end unless given), which one ArrayBuffer must hold. */
  #window(op: string, offset: unknown, length: unknown): number {
    const len = this.#range(op, offset, length, true);
    if (len > MAX_GUEST_RAM_BUFFER) {
      throw new ArgRangeError(
        `${op}: ${len} bytes exceed the ${MAX_GUEST_RAM_BUFFER}-byte limit of one ArrayBuffer on this Node; take smaller windows`,
      );
    }
    return len;
  }

  #check(op: string): void {
    if (this.#closed) throw closedError(op, `guest RAM '${this.name}'`);
  }
}
