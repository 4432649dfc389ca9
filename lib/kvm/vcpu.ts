import type { AccessSize, AddressSpace } from '../memory';
import { native, type NativeHandle, type NativeKvmVcpu } from '../native';
import { closedError, kvmError } from './errors';
import { encodeCpuid, encodeFpu, encodeMsrs, LAPIC_STATE_SIZE, type CpuidEntry } from './x86';
import { decodeRegs, decodeSregs, encodeRegs, encodeSregs, KVM_EXIT, type Regs, type Sregs } from './uapi';

/**
 * One exit of KVM_RUN, typed as rust-vmm's VcpuExit:
 * - `mmio` / `io`: an access to emulate; `size` is the guest's access size in bytes and `data` the
 *   value written (for writes). A read is answered with {@link Vcpu.complete} before the next run.
 * - `hlt`, `shutdown` (triple fault), `interrupted` (the run's time budget ran out, or a signal),
 *   `fail-entry`, `internal-error`, `system-event` and `unknown` carry only `reason`/`detail`.
 */
export type VcpuExit =
  | { kind: 'mmio'; address: number; size: number; isWrite: boolean; data: bigint }
  | { kind: 'io'; port: number; size: number; isWrite: boolean; count: number; data: bigint }
  | { kind: 'hlt' | 'shutdown' | 'interrupted' }
  | { kind: 'fail-entry' | 'internal-error' | 'system-event'; detail: bigint }
  | { kind: 'unknown'; reason: number };

/** Where a run sends its MMIO and port exits. */
export interface ExitRouting {
  /** Guest-physical MMIO (e.g. a PciBus's `memory`). */
  memory: AddressSpace;
  /** Guest port I/O (e.g. a PciBus's `io`). */
  io?: AddressSpace;
  /** Hears each routed access after it was served (`value`: what a read returned). */
  onAccess?(a: RoutedAccess): void;
  /** Checked after each exit: true ends the run with `stopped`. */
  stop?(): boolean;
}

/** A routed MMIO or port access. */
export interface RoutedAccess {
  space: 'memory' | 'io';
  address: number;
  size: number;
  isWrite: boolean;
  value: number | bigint;
}

/** Options of {@link Vcpu.runRouted}. */
export interface RunOptions {
  /** Wall-clock limit of the whole call, in ms (default 100). */
  budgetMs?: number;
  /** Stop after this many routed exits (default unlimited). */
  maxExits?: number;
}

/** Why {@link Vcpu.runRouted} returned, and what it did. */
export interface RunResult {
  reason:
    | 'hlt'
    | 'shutdown'
    | 'stopped'
    | 'budget'
    | 'max-exits'
    | 'fail-entry'
    | 'internal-error'
    | 'system-event'
    | 'unknown';
  /** The exit that ended the run. */
  exit: VcpuExit;
  mmioExits: number;
  ioExits: number;
}

const EXIT_BYTES = 48;
const ONES = [0, 0xff, 0xffff, 0xffffff, 0xffffffff];

/**
 * A vCPU: registers, special registers, and bounded runs.
 *
 * Threading model: a vCPU runs on the thread that created it (the main thread or a worker), one
 * bounded KVM_RUN at a time. Each KVM_RUN arms a per-thread kick timer, so a guest that never
 * exits (a busy loop, or a halt the in-kernel APIC handles) returns `interrupted` once the budget
 * is spent, and {@link Vcpu.runAsync} yields to the event loop between slices. Why not one worker
 * per vCPU: the device model the exits go to (AddressSpace, PciBus, quirks) is plain JavaScript
 * owned by one thread; a worker would pay a message round trip per exit, more than the exit
 * itself. A VMM that wants vCPUs in parallel gives each worker its own VM objects (the addon keeps
 * per-environment state), and everything that needs no JavaScript (MSI via irqfd, direct BARs,
 * ioeventfd) runs in the kernel, off any thread's event loop.
 */
export class Vcpu implements Disposable {
  readonly id: number;
  readonly path: string;
  readonly #handle: NativeKvmVcpu;
  // The addon writes each exit here (layout in native/kvm_vcpu.cc). Kept beside the handle: the
  // addon holds a pointer to its memory for as long as the handle can run.
  readonly #exitBuffer: ArrayBuffer;
  readonly #exit: DataView;
  readonly #onClose: () => void;
  #closed = false;
  #pendingRead = false;
  #unservedCount = 0;
  #lastWarn = 0;

  private constructor(
    handle: NativeKvmVcpu,
    buffer: ArrayBuffer,
    id: number,
    path: string,
    onClose: () => void,
  ) {
    this.#handle = handle;
    this.#exitBuffer = buffer;
    this.#exit = new DataView(buffer);
    this.id = id;
    this.path = path;
    this.#onClose = onClose;
  }

  /** @internal */
  static _create(vm: NativeHandle, id: number, mmapSize: number, path: string, onClose: () => void): Vcpu {
    const buffer = new ArrayBuffer(EXIT_BYTES);
    const h = native.kvmCreateVcpu(vm, id, mmapSize, buffer);
    return new Vcpu(h, buffer, id, path, onClose);
  }

  get closed(): boolean {
    return this.#closed;
  }

  getRegs(): Regs {
    return decodeRegs(native.kvmGetRegs(this.#open('KVM_GET_REGS')));
  }

  setRegs(r: Regs): void {
    native.kvmSetRegs(this.#open('KVM_SET_REGS'), encodeRegs(r));
  }

  getSregs(): Sregs {
    return decodeSregs(native.kvmGetSregs(this.#open('KVM_GET_SREGS')));
  }

  setSregs(s: Sregs): void {
    native.kvmSetSregs(this.#open('KVM_SET_SREGS'), encodeSregs(s));
  }

  /** KVM_SET_CPUID2: what CPUID returns in the guest (see Kvm.supportedCpuid and lib/vmm/cpuid.ts). */
  setCpuid(entries: readonly CpuidEntry[]): void {
    native.kvmSetCpuid2(this.#open('KVM_SET_CPUID2'), encodeCpuid(entries));
  }

  /**
   * KVM_SET_MSRS. KVM stops at the first MSR it refuses: that is an error here, naming it.
   */
  setMsrs(msrs: readonly { index: number; value: bigint }[]): void {
    const n = native.kvmSetMsrs(this.#open('KVM_SET_MSRS'), encodeMsrs(msrs));
    if (n !== msrs.length) {
      throw kvmError(
        'KVM_SET_MSRS',
        'EMSR',
        `KVM refused MSR 0x${msrs[n].index.toString(16)} (${n} of ${msrs.length} set)`,
        'this KVM does not support that MSR or that value',
        this.path,
      );
    }
  }

  /** KVM_SET_FPU with the x87 control word and MXCSR (the rest as after FNINIT). */
  setFpu(fcw = 0x37f, mxcsr = 0x1f80): void {
    native.kvmSetFpu(this.#open('KVM_SET_FPU'), encodeFpu(fcw, mxcsr));
  }

  /** KVM_GET_LAPIC: the in-kernel local APIC's first KiB of registers. */
  getLapic(): Buffer {
    return native.kvmGetLapic(this.#open('KVM_GET_LAPIC'));
  }

  /** KVM_SET_LAPIC (a Buffer of {@link LAPIC_STATE_SIZE} bytes, as getLapic returns). */
  setLapic(state: Buffer): void {
    if (!Buffer.isBuffer(state) || state.length !== LAPIC_STATE_SIZE)
      throw new RangeError(`setLapic: the state is ${LAPIC_STATE_SIZE} bytes`);
    native.kvmSetLapic(this.#open('KVM_SET_LAPIC'), state);
  }

  /**
   * One KVM_RUN, at most `budgetMs` long (0 = unbounded; then only an exit or a signal returns).
   * A pending read must have been answered with {@link Vcpu.complete}; if not, it reads all-ones.
   */
  run(budgetMs = 100): VcpuExit {
    const h = this.#open('KVM_RUN');
    if (typeof budgetMs !== 'number' || !(budgetMs >= 0) || !Number.isFinite(budgetMs)) {
      throw new RangeError(`run: budget ${String(budgetMs)} ms is not a non-negative number`);
    }
    if (this.#pendingRead) this.#answer(-1);
    const reason = native.kvmRun(h, Math.round(budgetMs * 1e6));
    return this.#decode(reason);
  }

  /** Answer the read exit just returned by {@link Vcpu.run} with `value`. */
  complete(value: number | bigint): void {
    this.#open('KVM_RUN');
    if (!this.#pendingRead) throw new RangeError('complete: the last exit was not a read');
    this.#answer(value);
  }

  /**
   * Run until the guest halts or shuts down, `routing.stop()` says so, or the budget is spent,
   * serving every MMIO and port exit through `routing`: each exit is one access of the guest's
   * size on the address space, and the value a read returns goes back to the guest.
   */
  runRouted(routing: ExitRouting, opts: RunOptions = {}): RunResult {
    const h = this.#open('KVM_RUN');
    const budget = opts.budgetMs ?? 100;
    const maxExits = opts.maxExits ?? Infinity;
    if (!(budget > 0) || !Number.isFinite(budget))
      throw new RangeError(`runRouted: budget ${String(budget)} ms is not positive`);
    // One timer for the whole call: the clock is never read per exit (under TCG a clock read can
    // cost more than the dispatch), and the kick stays pending between runs once it fired.
    native.kvmArmKick(h, Math.round(budget * 1e6));
    try {
      return this.#routed(h, routing, maxExits);
    } finally {
      native.kvmArmKick(h, 0);
    }
  }

  #routed(h: NativeKvmVcpu, routing: ExitRouting, maxExits: number): RunResult {
    let mmioExits = 0;
    let ioExits = 0;
    const dv = this.#exit;
    for (;;) {
      if (this.#pendingRead) this.#answer(-1);
      const reason = native.kvmRun(h, 0);
      if (reason === KVM_EXIT.MMIO || reason === KVM_EXIT.IO) {
        const isMmio = reason === KVM_EXIT.MMIO;
        const space = isMmio ? routing.memory : routing.io;
        const address = Number(dv.getBigUint64(8, true));
        const size = dv.getUint32(4, true);
        const isWrite = dv.getUint8(28) !== 0;
        const count = isMmio ? 1 : dv.getUint32(24, true);
        if (isMmio) mmioExits++;
        else ioExits++;
        if (space === undefined || count !== 1) this.#unserved(isMmio, address, count);
        let value: number | bigint;
        if (isWrite) {
          value = size === 8 ? dv.getBigUint64(16, true) : this.#small(size);
          if (space !== undefined && count === 1) this.#write(space, address, size, value);
        } else {
          value =
            space !== undefined && count === 1
              ? this.#read(space, address, size)
              : size === 8
                ? -1n
                : (ONES[size] ?? 0);
          this.#pendingRead = true;
          this.#answer(value);
        }
        routing.onAccess?.({ space: isMmio ? 'memory' : 'io', address, size, isWrite, value });
        if (routing.stop?.())
          return { reason: 'stopped', exit: this.#decode(reason, false), mmioExits, ioExits };
        if (mmioExits + ioExits >= maxExits)
          return { reason: 'max-exits', exit: this.#decode(reason, false), mmioExits, ioExits };
        continue;
      }
      if (reason === KVM_EXIT.INTR) {
        if (routing.stop?.()) return { reason: 'stopped', exit: { kind: 'interrupted' }, mmioExits, ioExits };
        if (dv.getUint8(29) !== 0)
          return { reason: 'budget', exit: { kind: 'interrupted' }, mmioExits, ioExits };
        continue; // another signal
      }
      const exit = this.#decode(reason);
      const kind = exit.kind as RunResult['reason'];
      return { reason: kind, exit, mmioExits, ioExits };
    }
  }

  /**
   * {@link Vcpu.runRouted} in slices of `sliceMs`, yielding to the event loop between them, until
   * the guest halts or shuts down, `routing.stop()` is true, or `totalMs` is spent.
   */
  async runAsync(
    routing: ExitRouting,
    opts: { sliceMs?: number; totalMs?: number } = {},
  ): Promise<RunResult> {
    const slice = opts.sliceMs ?? 10;
    const end = performance.now() + (opts.totalMs ?? 10_000);
    let mmio = 0;
    let io = 0;
    for (;;) {
      const left = end - performance.now();
      const r = this.runRouted(routing, { budgetMs: Math.max(0.1, Math.min(slice, left)) });
      mmio += r.mmioExits;
      io += r.ioExits;
      if (r.reason !== 'budget' || left <= slice) return { ...r, mmioExits: mmio, ioExits: io };
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * The thinnest native exit handler, for benchmarks: every MMIO read is answered with `value` in
   * the addon, without JavaScript, until any other exit. Returns the MMIO exits served and the
   * exit that ended it.
   */
  runNativeConstant(value: number, budgetMs = 1000): { served: number; exit: VcpuExit } {
    const h = this.#open('KVM_RUN');
    const served = native.kvmRunNative(h, value >>> 0, Math.round(budgetMs * 1e6));
    this.#pendingRead = false;
    return { served, exit: this.#decode(this.#exit.getUint32(0, true)) };
  }

  /** Close the vCPU (unmap kvm_run, close its fd). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.kvmCloseVcpu(this.#handle);
    this.#onClose();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Exits the routing cannot serve: port I/O with no `io` space, or string port I/O (`rep ins/outs`,
   * count > 1), which is not implemented. They read as all-ones and drop writes; counted and logged
   * at most once a second, never thrown (a guest chooses them).
   */
  get unservedExits(): number {
    return this.#unservedCount;
  }

  #unserved(isMmio: boolean, address: number, count: number): void {
    this.#unservedCount++;
    const now = Date.now();
    if (now - this.#lastWarn < 1000) return;
    this.#lastWarn = now;
    const what = isMmio
      ? `MMIO at 0x${address.toString(16)}`
      : `port 0x${address.toString(16)} (count ${count})`;
    process.emitWarning(`${this.path}: unserved ${what}: reads all-ones, writes dropped`, 'KvmExitWarning');
  }

  #small(size: number): number {
    const dv = this.#exit;
    if (size === 1) return dv.getUint8(16);
    if (size === 2) return dv.getUint16(16, true);
    if (size === 4) return dv.getUint32(16, true);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + dv.getUint8(16 + i);
    return v;
  }

  // Odd sizes (3, 5, 6, 7: an access KVM split at a page boundary) go byte by byte.
  #read(space: AddressSpace, address: number, size: number): number | bigint {
    if (size === 1 || size === 2 || size === 4 || size === 8) return space.read(address, size as AccessSize);
    let v = 0n;
    for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(space.read(address + i, 1) as number);
    return v;
  }

  #write(space: AddressSpace, address: number, size: number, value: number | bigint): void {
    if (size === 1 || size === 2 || size === 4 || size === 8) {
      space.write(address, size as AccessSize, value);
      return;
    }
    const v = BigInt(value);
    for (let i = 0; i < size; i++) space.write(address + i, 1, Number((v >> BigInt(8 * i)) & 0xffn));
  }

  #answer(value: number | bigint): void {
    const dv = this.#exit;
    if (typeof value === 'bigint') dv.setBigUint64(16, BigInt.asUintN(64, value), true);
    else if (value < 0) dv.setBigUint64(16, 0xffff_ffff_ffff_ffffn, true);
    else {
      dv.setUint32(16, value >>> 0, true);
      dv.setUint32(20, Math.floor(value / 2 ** 32) >>> 0, true);
    }
    this.#pendingRead = false;
  }

  #decode(reason: number, markPending = true): VcpuExit {
    const dv = this.#exit;
    switch (reason) {
      case KVM_EXIT.MMIO: {
        const isWrite = dv.getUint8(28) !== 0;
        if (markPending) this.#pendingRead = !isWrite;
        return {
          kind: 'mmio',
          address: Number(dv.getBigUint64(8, true)),
          size: dv.getUint32(4, true),
          isWrite,
          data: isWrite ? dv.getBigUint64(16, true) : 0n,
        };
      }
      case KVM_EXIT.IO: {
        const isWrite = dv.getUint8(28) !== 0;
        if (markPending) this.#pendingRead = !isWrite;
        return {
          kind: 'io',
          port: Number(dv.getBigUint64(8, true)),
          size: dv.getUint32(4, true),
          isWrite,
          count: dv.getUint32(24, true),
          data: isWrite ? dv.getBigUint64(16, true) : 0n,
        };
      }
      case KVM_EXIT.HLT:
        return { kind: 'hlt' };
      case KVM_EXIT.SHUTDOWN:
        return { kind: 'shutdown' };
      case KVM_EXIT.INTR:
        return { kind: 'interrupted' };
      case KVM_EXIT.FAIL_ENTRY:
        return { kind: 'fail-entry', detail: dv.getBigUint64(32, true) };
      case KVM_EXIT.INTERNAL_ERROR:
        return { kind: 'internal-error', detail: dv.getBigUint64(32, true) };
      case KVM_EXIT.SYSTEM_EVENT:
        return { kind: 'system-event', detail: dv.getBigUint64(32, true) };
      default:
        return { kind: 'unknown', reason };
    }
  }

  #open(op: string): NativeKvmVcpu {
    if (this.#closed) throw closedError(op, 'vCPU', this.path);
    void this.#exitBuffer;
    return this.#handle;
  }
}
