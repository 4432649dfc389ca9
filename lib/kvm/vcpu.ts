import { ArgRangeError } from '../base/error';
import { sinkOf, type GuestErrorSink } from '../base/guest-error';
import { native, type NativeHandle, type NativeKvmVcpu } from '../native';
import { closedError, kvmError } from './errors';
import { decodeExit, EXIT_RECORD, writeAnswer, writtenValue, type VcpuExit } from './exit';
import { routeAccess, type ExitRouting } from './exit-routing';
import type { ExitTable } from './exit-table';
import { VcpuThread, type VcpuThreadHandlers } from './vcpu-thread';
import { encodeCpuid, encodeFpu, encodeMsrs, LAPIC_STATE_SIZE, type CpuidEntry } from './x86';
import { decodeRegs, decodeSregs, encodeRegs, encodeSregs, KVM_EXIT, type Regs, type Sregs } from './uapi';

/** Options of {@link Vcpu.runRouted}. */
export interface RunOptions {
  /** Wall-clock limit of the whole call, in ms (default 100). */
  budgetMs?: number;
  /** Stop after this many routed exits (default unlimited). */
  maxExits?: number;
}

/**
 * Options of {@link Vm.createVcpu}: where exits {@link Vcpu.runRouted} cannot serve are reported
 * (`guestErrors`, source `kvm`, kind `unserved-exit`; default a sink of the vCPU's own, whose
 * `log` and `logIntervalMs` can be given instead).
 */
export interface VcpuOptions {
  /** The sink unserved exits are reported to (a machine's). */
  guestErrors?: GuestErrorSink;
  /** Without `guestErrors`: the own sink's log (`null`: none). */
  log?: ((line: string) => void) | null;
  /** Without `guestErrors`: the own sink's minimum time between two summary lines, in milliseconds. */
  logIntervalMs?: number;
}

/** Why {@link Vcpu.runRouted} returned, and what it did. */
export interface RunResult {
  /**
   * What ended the run: the exit's kind, `stopped` (`routing.stop()`), `budget` (`budgetMs` ran
   * out) or `max-exits` (`maxExits` reached).
   */
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
  /** MMIO exits routed during this call. */
  mmioExits: number;
  /** Port exits routed during this call. */
  ioExits: number;
}

/**
 * A vCPU: registers, special registers, runs.
 *
 * A VMM runs it on its own thread ({@link Vcpu.startThread}): KVM_RUN in a loop on a thread the
 * addon creates and joins, serving the ranges of an {@link ExitTable} there and handing the other
 * MMIO and port exits to this thread, one at a time. While the thread runs the guest, the ioctls
 * here that need the vCPU refuse with EBUSY: registers, special registers, the local APIC, CPUID
 * and MSRs work again once it is parked ({@link VcpuThread.pause}, or the end of a
 * {@link VcpuSet} run); {@link Vcpu.run} and {@link Vcpu.runRouted} refuse while it has a thread.
 *
 * {@link Vcpu.run} and {@link Vcpu.runRouted} are bounded runs on the calling thread instead, for
 * tests and flat guests: a per-thread kick timer ends a run whose guest does not exit in time.
 */
export class Vcpu implements Disposable {
  /** The vCPU id given to KVM_CREATE_VCPU (its APIC ID on x86). */
  readonly id: number;
  /** How errors name it, e.g. `/dev/kvm vm vcpu 0`. */
  readonly path: string;
  readonly #handle: NativeKvmVcpu;
  // The addon writes each exit here (layout in native/kvm_vcpu.cc). Kept beside the handle: the
  // addon holds a pointer to its memory for as long as the handle can run.
  readonly #exitBuffer: ArrayBuffer;
  readonly #exit: DataView;
  readonly #onClose: () => void;
  #closed = false;
  #thread: VcpuThread | null = null;
  #pendingRead = false;
  #unservedCount = 0;
  readonly #sink: GuestErrorSink;

  private constructor(
    handle: NativeKvmVcpu,
    buffer: ArrayBuffer,
    id: number,
    path: string,
    onClose: () => void,
    sink: GuestErrorSink,
  ) {
    this.#sink = sink;
    this.#handle = handle;
    this.#exitBuffer = buffer;
    this.#exit = new DataView(buffer);
    this.id = id;
    this.path = path;
    this.#onClose = onClose;
  }

  /** @internal */
  static _create(
    vm: NativeHandle,
    id: number,
    mmapSize: number,
    path: string,
    onClose: () => void,
    opts: VcpuOptions = {},
  ): Vcpu {
    const sink = sinkOf(opts);
    const buffer = new ArrayBuffer(EXIT_RECORD.bytes);
    const h = native.kvmCreateVcpu(vm, id, mmapSize, buffer);
    return new Vcpu(h, buffer, id, path, onClose, sink);
  }

  /** Whether the vCPU was closed (by {@link Vcpu.close} or its VM). */
  get closed(): boolean {
    return this.#closed;
  }

  /** KVM_GET_REGS. */
  getRegs(): Regs {
    return decodeRegs(native.kvmGetRegs(this.#open('KVM_GET_REGS')));
  }

  /** KVM_SET_REGS. */
  setRegs(r: Regs): void {
    native.kvmSetRegs(this.#open('KVM_SET_REGS'), encodeRegs(r));
  }

  /** KVM_GET_SREGS. */
  getSregs(): Sregs {
    return decodeSregs(native.kvmGetSregs(this.#open('KVM_GET_SREGS')));
  }

  /** KVM_SET_SREGS. */
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

  /**
   * KVM_GET_TSC_KHZ: the rate of the guest's TSC in kHz, by default the host TSC's rate as KVM
   * measured it when it loaded (which a host that refined its calibration later may disagree with).
   */
  get tscKhz(): number {
    return native.kvmGetTscKhz(this.#open('KVM_GET_TSC_KHZ'));
  }

  /**
   * KVM_SET_TSC_KHZ: run the guest's TSC at `khz`. Without TSC scaling in the CPU, KVM takes only a
   * rate at or above the host's (and then catches the guest's TSC up on entries); a lower one fails.
   */
  setTscKhz(khz: number): void {
    if (!Number.isInteger(khz) || khz <= 0 || khz > 0xffff_ffff)
      throw new ArgRangeError(`setTscKhz: ${String(khz)} is not a rate in kHz`);
    native.kvmSetTscKhz(this.#open('KVM_SET_TSC_KHZ'), khz);
  }

  /** KVM_GET_LAPIC: the in-kernel local APIC's first KiB of registers. */
  getLapic(): Buffer {
    return native.kvmGetLapic(this.#open('KVM_GET_LAPIC'));
  }

  /** KVM_SET_LAPIC (a Buffer of {@link LAPIC_STATE_SIZE} bytes, as getLapic returns). */
  setLapic(state: Buffer): void {
    if (!Buffer.isBuffer(state) || state.length !== LAPIC_STATE_SIZE)
      throw new ArgRangeError(`setLapic: the state is ${LAPIC_STATE_SIZE} bytes`);
    native.kvmSetLapic(this.#open('KVM_SET_LAPIC'), state);
  }

  /**
   * One KVM_RUN, at most `budgetMs` long (0 = unbounded; then only an exit or a signal returns).
   * A pending read must have been answered with {@link Vcpu.complete}; if not, it reads all-ones.
   */
  run(budgetMs = 100): VcpuExit {
    const h = this.#open('KVM_RUN');
    if (typeof budgetMs !== 'number' || !(budgetMs >= 0) || !Number.isFinite(budgetMs)) {
      throw new ArgRangeError(`run: budget ${String(budgetMs)} ms is not a non-negative number`);
    }
    if (this.#pendingRead) this.#answer(-1);
    const reason = native.kvmRun(h, Math.round(budgetMs * 1e6));
    return this.#decode(reason);
  }

  /** Answer the read exit just returned by {@link Vcpu.run} with `value`. */
  complete(value: number | bigint): void {
    this.#open('KVM_RUN');
    if (!this.#pendingRead) throw new ArgRangeError('complete: the last exit was not a read');
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
      throw new ArgRangeError(`runRouted: budget ${String(budget)} ms is not positive`);
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
    const R = EXIT_RECORD;
    const unserved = (isMmio: boolean, address: number, count: number): void =>
      this.#unserved(isMmio, address, count);
    for (;;) {
      if (this.#pendingRead) this.#answer(-1);
      const reason = native.kvmRun(h, 0);
      if (reason === KVM_EXIT.MMIO || reason === KVM_EXIT.IO) {
        const isMmio = reason === KVM_EXIT.MMIO;
        const address = Number(dv.getBigUint64(R.address, true));
        const size = dv.getUint32(R.size, true);
        const isWrite = dv.getUint8(R.isWrite) !== 0;
        const count = isMmio ? 1 : dv.getUint32(R.count, true);
        if (isMmio) mmioExits++;
        else ioExits++;
        const written = isWrite ? writtenValue(dv, size) : 0;
        const value = routeAccess(routing, isMmio, address, size, isWrite, count, written, unserved);
        if (!isWrite) {
          this.#pendingRead = true;
          this.#answer(value);
        }
        if (routing.stop?.())
          return { reason: 'stopped', exit: this.#decode(reason, false), mmioExits, ioExits };
        if (mmioExits + ioExits >= maxExits)
          return { reason: 'max-exits', exit: this.#decode(reason, false), mmioExits, ioExits };
        continue;
      }
      if (reason === KVM_EXIT.INTR) {
        if (routing.stop?.()) return { reason: 'stopped', exit: { kind: 'interrupted' }, mmioExits, ioExits };
        if (dv.getUint8(R.kicked) !== 0)
          return { reason: 'budget', exit: { kind: 'interrupted' }, mmioExits, ioExits };
        continue; // another signal
      }
      const exit = this.#decode(reason);
      const kind = exit.kind as RunResult['reason'];
      return { reason: kind, exit, mmioExits, ioExits };
    }
  }

  /**
   * Run this vCPU on its own thread until {@link VcpuThread.stop} (or {@link Vcpu.close}, which
   * stops it first). `table` holds the ranges the thread serves itself; the other MMIO and port
   * exits come to `handlers.onExit` on this thread.
   */
  startThread(
    handlers: VcpuThreadHandlers,
    opts: { table?: ExitTable | null; name?: string; nice?: number } = {},
  ): VcpuThread {
    const h = this.#open('startThread');
    if (this.#thread !== null && this.#thread.state !== 'stopped') {
      throw kvmError(
        'startThread',
        'EBUSY',
        `${this.path} already runs on a thread`,
        'stop it first',
        this.path,
      );
    }
    if (this.#pendingRead) this.#answer(-1);
    const name = opts.name ?? `vcpu ${this.id}`;
    this.#thread = new VcpuThread(
      { handle: h, exit: this.#exit, path: this.path },
      handlers,
      opts.table ?? null,
      name,
      opts.nice ?? 0,
    );
    return this.#thread;
  }

  /** The vCPU's thread, while it has one that has not stopped. */
  get thread(): VcpuThread | null {
    return this.#thread !== null && this.#thread.state !== 'stopped' ? this.#thread : null;
  }

  /** @internal The native handle, for benchmark hooks. */
  get _handle(): NativeKvmVcpu {
    return this.#open('vcpu');
  }

  /** @internal The exit record, for benchmark hooks. */
  get _exitRecord(): DataView {
    return this.#exit;
  }

  /** Close the vCPU (unmap kvm_run, close its fd). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#thread?.stop();
    native.kvmCloseVcpu(this.#handle);
    this.#onClose();
  }

  /** Same as {@link Vcpu.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Exits the routing cannot serve: port I/O with no `io` space, or string port I/O (`rep ins/outs`,
   * count > 1), which is not implemented. They read as all-ones and drop writes; counted and
   * reported to the vCPU's sink (kind `unserved-exit`), never thrown (a guest chooses them).
   */
  get unservedExits(): number {
    return this.#unservedCount;
  }

  #unserved(isMmio: boolean, address: number, count: number): void {
    this.#unservedCount++;
    const what = isMmio
      ? `MMIO at 0x${address.toString(16)}`
      : `port 0x${address.toString(16)} (count ${count})`;
    this.#sink.report({
      source: 'kvm',
      kind: 'unserved-exit',
      where: isMmio ? 'mmio' : 'pio',
      address,
      action: 'read-all-ones',
      message: `${this.path}: unserved ${what}: reads all-ones, writes dropped`,
      hint: isMmio
        ? 'runRouted was given no space for MMIO'
        : 'string port I/O (rep ins/outs) is not implemented, or runRouted has no io space',
    });
  }

  #answer(value: number | bigint): void {
    writeAnswer(this.#exit, value);
    this.#pendingRead = false;
  }

  #decode(reason: number, markPending = true): VcpuExit {
    const exit = decodeExit(this.#exit, reason);
    if (markPending && (exit.kind === 'mmio' || exit.kind === 'io')) this.#pendingRead = !exit.isWrite;
    return exit;
  }

  #open(op: string): NativeKvmVcpu {
    if (this.#closed) throw closedError(op, 'vCPU', this.path);
    void this.#exitBuffer;
    return this.#handle;
  }
}
