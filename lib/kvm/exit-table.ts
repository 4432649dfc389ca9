import { ArgRangeError, ArgTypeError } from '../base/error';
import {
  native,
  type NativeExitEntry,
  type NativeExitTable,
  type NativeHandle,
  type NativeMappingHandle,
} from '../native';
import type { ByteSink } from './byte-sink';
import { closedError } from './errors';

/** The two spaces a vCPU exits on. */
export type ExitSpace = 'mmio' | 'pio';

/**
 * One range a vCPU thread serves itself:
 * - `mmap`: each access is one fixed-width load or store at `offset + (address - start)` of the
 *   mapping, guarded against SIGBUS (a revoked BAR reads all-ones and is reported);
 * - `fd`: each access is one pread/pwrite of its size at `offset + (address - start)` of the fd;
 *   only aligned accesses (others go to JavaScript, which reports them).
 * - `const`: each read answers the bytes of `value` at the access (little-endian from `start`; at
 *   most 8 bytes); writes go to JavaScript. A device model publishes one for a register that reads
 *   the same until the model's state changes (a UART's line status), and replaces it then;
 * - `sink`: each byte write goes into the {@link ByteSink} (a UART's transmitter); reads, wider
 *   writes, and writes the sink refuses (full, or closed) go to JavaScript.
 * A write to a `readonly` range goes to JavaScript. So do odd sizes and accesses that do not lie
 * inside one range.
 */
export type ExitTableEntry =
  | {
      /** First guest-physical address (or port) of the range. */
      start: number;
      /** Length of the range in bytes. */
      size: number;
      /** Served by loads and stores on a mapping. */
      kind: 'mmap';
      /** The mapping's native handle (a Mapping's, which the table pins). */
      mapping: NativeMappingHandle;
      /** Offset in the mapping that `start` corresponds to, in bytes. */
      offset: number;
      /** True when writes must go to JavaScript instead (a read-only range). */
      readonly?: boolean;
    }
  | {
      /** First guest-physical address (or port) of the range. */
      start: number;
      /** Length of the range in bytes. */
      size: number;
      /** Served by pread/pwrite on a device fd. */
      kind: 'fd';
      /** The VFIO device's native handle, which the table pins. */
      fd: NativeHandle;
      /** File offset that `start` corresponds to (the region's offset plus the offset in it). */
      offset: number;
    }
  | {
      /** First guest-physical address (or port) of the range. */
      start: number;
      /** Length of the range in bytes (at most 8). */
      size: number;
      /** Reads answer a constant. */
      kind: 'const';
      /** The range's bytes as a little-endian integer (a safe integer). */
      value: number;
    }
  | {
      /** First guest-physical address (or port) of the range. */
      start: number;
      /** Length of the range in bytes. */
      size: number;
      /** Byte writes go into a sink. */
      kind: 'sink';
      /** Where the bytes go (the table holds it while a vCPU may use it). */
      sink: ByteSink;
    };

/** The native kinds of {@link ExitTableEntry}'s. */
const KINDS = ['mmap', 'fd', 'const', 'sink'] as const;

const SPACE: Record<ExitSpace, number> = { mmio: 0, pio: 1 };

/**
 * The ranges that vCPU threads serve without JavaScript, one list per space. The flat view stays
 * the one source of routing truth: a memory listener (lib/vmm) publishes its trapped ranges here,
 * as the KVM memory listener publishes slots. {@link ExitTable.set} replaces a space's list whole
 * (a vCPU sees the old list or the new one, never half of it), and returns only once no vCPU
 * thread still uses the old one: a range removed is never accessed after `set` returns. The table
 * pins what its ranges point at, so closing a Mapping or a Device under a running vCPU is safe.
 */
export class ExitTable implements Disposable {
  readonly #handle: NativeExitTable;
  #closed = false;
  readonly #counts: Record<ExitSpace, number> = { mmio: 0, pio: 0 };

  constructor() {
    this.#handle = native.exitTableCreate();
  }

  /** @internal The native table, for Vcpu.startThread. */
  get _handle(): NativeExitTable {
    this.#open('exit table');
    return this.#handle;
  }

  /** Whether {@link ExitTable.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** How many ranges each space holds now. */
  get counts(): Readonly<Record<ExitSpace, number>> {
    return { ...this.#counts };
  }

  /** Replace `space`'s ranges (sorted by start, disjoint). */
  set(space: ExitSpace, entries: readonly ExitTableEntry[]): void {
    const s = spaceIndex(space);
    if (!Array.isArray(entries)) throw new ArgTypeError('ExitTable.set: entries must be an array');
    const list: NativeExitEntry[] = entries.map(nativeEntry);
    native.exitTableSet(this.#open('ExitTable.set'), s, list);
    this.#counts[space] = list.length;
  }

  /**
   * What a vCPU thread does with an access: null when it hands it to JavaScript, else the range
   * kind and where it goes (the host address for `mmap`, the fd offset for `fd`).
   */
  lookup(
    space: ExitSpace,
    address: number,
    size: number,
    isWrite: boolean,
  ): {
    /** Which kind of range serves the access. */
    kind: ExitTableEntry['kind'];
    /** Where the access goes: the host virtual address (`mmap`), the file offset (`fd`), else 0. */
    at: bigint;
  } | null {
    const r = native.exitTableLookup(
      this.#open('ExitTable.lookup'),
      spaceIndex(space),
      address,
      size,
      isWrite,
    );
    return r === null ? null : { kind: KINDS[r.kind], at: r.at };
  }

  /**
   * Serve one access as a vCPU thread would, on this thread: null when it would go to JavaScript,
   * else what a read got (`value`), whether a mapping's page was revoked (`fault`) and the fd
   * access's errno (0). For tests of what a table serves, without a guest.
   */
  serve(
    space: ExitSpace,
    address: number,
    size: number,
    isWrite: boolean,
    value = 0n,
  ): {
    /** What a read got (0 for a write). */
    value: bigint;
    /** Whether a mapping's page was revoked (a read then got all-ones). */
    fault: boolean;
    /** The fd access's errno, or 0. */
    errno: number;
  } | null {
    return native.exitTableServe(
      this.#open('ExitTable.serve'),
      spaceIndex(space),
      address,
      size,
      isWrite,
      BigInt.asUintN(64, value),
    );
  }

  /** Drop the table; threads still running keep the ranges they have until they stop. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.exitTableClose(this.#handle);
  }

  /** Same as {@link ExitTable.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(op: string): NativeExitTable {
    if (this.#closed) throw closedError(op, 'exit table', 'exit table');
    return this.#handle;
  }
}

function nativeEntry(e: ExitTableEntry): NativeExitEntry {
  const at = { start: e.start, size: e.size };
  switch (e.kind) {
    case 'mmap':
      return { ...at, kind: 0, handle: e.mapping, offset: e.offset, readonly: !!e.readonly };
    case 'fd':
      return { ...at, kind: 1, handle: e.fd, offset: e.offset, readonly: false };
    case 'const':
      if (!Number.isSafeInteger(e.value) || e.value < 0)
        throw new ArgRangeError(`exit table constant ${String(e.value)} is not a safe integer >= 0`);
      return { ...at, kind: 2, handle: null, offset: 0, value: e.value, readonly: true };
    case 'sink':
      return { ...at, kind: 3, handle: e.sink._handle, offset: 0, readonly: false };
    default:
      throw new ArgRangeError(
        `exit table entry kind ${String((e as { kind?: unknown }).kind)} is not mmap, fd, const or sink`,
      );
  }
}

function spaceIndex(space: unknown): number {
  if (space !== 'mmio' && space !== 'pio')
    throw new ArgRangeError(`exit table space ${String(space)} is not 'mmio' or 'pio'`);
  return SPACE[space];
}
