import { ArgRangeError, ArgTypeError } from '../base/error';
import { sinkOf, type GuestErrorSink } from '../base/guest-error';
import { routeAccess, type ExitRouting } from './exit-routing';
import type { VcpuExit } from './exit';
import type { ExitTable } from './exit-table';
import type { Vcpu } from './vcpu';
import type { ParkReason, VcpuThread, VcpuThreadFault } from './vcpu-thread';

/** Why {@link VcpuSet.run} returned. Every thread is parked when it does (or stopped). */
export type VcpuSetEnd =
  | {
      /** {@link VcpuSet.stop} was called, or `routing.stop()` returned true. */
      readonly reason: 'stopped';
    }
  | {
      /** {@link VcpuSet.interrupt} was called (an aborted signal rejects the run instead). */
      readonly reason: 'interrupted';
    }
  | {
      /** The run's `timeoutMs` elapsed. */
      readonly reason: 'timeout';
    }
  | {
      /** A vCPU made an exit only the owner can decide on (shutdown, system event, ...). */
      readonly reason: 'guest-exit';
      /** The id of the vCPU that exited. */
      readonly vcpu: number;
      /** The exit itself. */
      readonly exit: VcpuExit;
    }
  | {
      /** KVM_RUN failed, or serving an exit threw (a VMM bug; the read got all-ones). */
      readonly reason: 'error';
      /** The id of the vCPU it happened on. */
      readonly vcpu?: number;
      /** What was thrown. */
      readonly error: unknown;
    };

/** Options of {@link VcpuSet}. */
export interface VcpuSetOptions {
  /** Where the exits the threads hand over are served. `routing.stop()` true ends a run. */
  routing: ExitRouting;
  /** The ranges the threads serve themselves (none: every MMIO and port exit comes here). */
  table?: ExitTable | null;
  /**
   * Where an access served on a thread that failed (a revoked BAR, a pread error) is reported:
   * source `kvm`, kind `thread-access-failed`, `detail` the {@link VcpuThreadFault} with the
   * vCPU's id. Default: a sink of the set's own ({@link VcpuSet.guestErrors}), which logs.
   */
  guestErrors?: GuestErrorSink;
  /** Without `guestErrors`: the own sink's log (`null`: none). */
  log?: ((line: string) => void) | null;
  /** Without `guestErrors`: the own sink's minimum time between two summary lines, in milliseconds. */
  logIntervalMs?: number;
  /**
   * An access served on a thread failed (a revoked BAR, a pread error). Given without
   * `guestErrors`, the faults are the caller's alone and no sink hears them.
   * @deprecated pass `guestErrors` and listen to its `guest-error` event
   */
  onFault?(vcpu: number, fault: VcpuThreadFault): void;
  /**
   * Work an exit's handler may have started that its vCPU must not run ahead of: called after
   * each exit served here; a promise holds that vCPU (not the event loop) until it settles. Pass
   * `() => vm.slotChanges` when the VM's memory listener queues its slot changes, so that a vCPU
   * whose BAR write moved a slot next sees the memory map it made.
   */
  pending?: () => Promise<void> | null;
  /** Thread names: `${name} ${id}` (default `vcpu`). */
  name?: string;
  /**
   * The vCPU threads' nice value (default 0). A positive one lets the event loop preempt a vCPU
   * thread as soon as it has work, where they share a CPU.
   */
  nice?: number;
}

/** Options of {@link VcpuSet.run}. */
export interface VcpuSetRunOptions {
  /** End the run with `timeout` after this long. */
  timeoutMs?: number;
  /** Abort the run: it rejects with the signal's reason, every thread parked. */
  signal?: AbortSignal;
}

/**
 * The vCPUs of one VM, each on its own thread: the one run loop of lib/kvm. Exits the threads
 * hand over are served on `routing`, one at a time, on this thread. A run ends at the first of: a
 * guest exit only the owner can decide on (shutdown, a system event, an entry failure, ...), a
 * KVM_RUN error, `routing.stop()`, {@link interrupt}, {@link stop}, the timeout or the signal; every
 * other thread is parked before {@link run} resolves, so the owner sees a still machine.
 */
export class VcpuSet {
  /** The vCPUs, as given to the constructor. */
  readonly vcpus: readonly Vcpu[];
  /** Where the threads' failed accesses are reported (see {@link VcpuSetOptions.guestErrors}). */
  readonly guestErrors: GuestErrorSink;
  readonly #opts: VcpuSetOptions;
  /** False when a deprecated `onFault` alone takes the faults. */
  readonly #reportFaults: boolean;
  #threads: VcpuThread[] = [];
  #end: ((e: VcpuSetEnd) => void) | null = null;
  #ending = false;
  #stopped = false;
  #unserved = 0;
  readonly #count = (): void => {
    this.#unserved++;
  };

  constructor(vcpus: readonly Vcpu[], opts: VcpuSetOptions) {
    if (!Array.isArray(vcpus) || vcpus.length === 0)
      throw new ArgRangeError('VcpuSet needs at least one vCPU');
    if (opts === null || typeof opts !== 'object' || typeof opts.routing?.memory?.read !== 'function')
      throw new ArgTypeError('VcpuSet needs options with routing.memory');
    if (opts.onFault !== undefined && typeof opts.onFault !== 'function')
      throw new ArgTypeError('VcpuSet: onFault must be a function');
    if (opts.pending !== undefined && typeof opts.pending !== 'function')
      throw new ArgTypeError('VcpuSet: pending must be a function returning a promise or null');
    this.guestErrors = sinkOf(opts);
    this.#reportFaults = opts.guestErrors !== undefined || opts.onFault === undefined;
    this.vcpus = vcpus;
    this.#opts = opts;
  }

  /** True while a run is in progress. */
  get running(): boolean {
    return this.#end !== null;
  }

  /** Exits served on the threads (no JavaScript), handed here, and failed, summed over vCPUs. */
  get stats(): {
    /** MMIO exits served on the threads from the exit table. */
    mmio: number;
    /** Port exits served on the threads from the exit table. */
    pio: number;
    /** Exits handed to JavaScript and served on `routing`. */
    handoffs: number;
    /** Accesses served on the threads that failed. */
    faults: number;
    /** KVM_RUN calls. */
    runs: number;
  } {
    const sum = { mmio: 0, pio: 0, handoffs: 0, faults: 0, runs: 0 };
    for (const t of this.#threads) {
      const s = t.stats;
      sum.mmio += s.mmio;
      sum.pio += s.pio;
      sum.handoffs += s.handoffs;
      sum.faults += s.faults;
      sum.runs += s.runs;
    }
    return sum;
  }

  /** Exits no routing could serve (string port I/O, ports with no `io` space). */
  get unservedExits(): number {
    return this.#unserved;
  }

  /** Run every vCPU (starting their threads the first time) until the run ends; see the class. */
  async run(opts: VcpuSetRunOptions = {}): Promise<VcpuSetEnd> {
    if (this.#stopped) return { reason: 'stopped' };
    if (this.#end !== null) throw new ArgRangeError('VcpuSet.run: a run is already in progress');
    const timeout = opts.timeoutMs ?? Infinity;
    if (typeof timeout !== 'number' || !(timeout > 0))
      throw new ArgRangeError(`timeoutMs ${String(timeout)} must be positive`);
    opts.signal?.throwIfAborted();
    const ended = new Promise<VcpuSetEnd>((resolve) => (this.#end = resolve));
    this.#ending = false;
    const timer = Number.isFinite(timeout)
      ? setTimeout(() => this.#finish({ reason: 'timeout' }), timeout)
      : null;
    const onAbort = (): void => this.#finish({ reason: 'interrupted' });
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (this.#threads.length === 0) this.#startThreads();
      else for (const t of this.#threads) t.resume();
      const end = await ended;
      await Promise.all(this.#threads.map((t) => t.pause()));
      opts.signal?.throwIfAborted();
      return this.#stopped && end.reason === 'interrupted' ? { reason: 'stopped' } : end;
    } finally {
      if (timer !== null) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      this.#end = null;
    }
  }

  /** End the run in progress with `interrupted` (every thread parks first). */
  interrupt(): void {
    this.#finish({ reason: 'interrupted' });
  }

  /** Park every thread; resolves once all are parked. */
  async pause(): Promise<void> {
    await Promise.all(this.#threads.map((t) => t.pause()));
  }

  /**
   * Reset: park every thread, call `fn` on each vCPU (set registers, say), and let the run in
   * progress, if any, go on.
   */
  async reset(fn: (vcpu: Vcpu) => void): Promise<void> {
    await this.pause();
    for (const v of this.vcpus) fn(v);
    if (this.#end !== null && !this.#ending) for (const t of this.#threads) t.resume();
  }

  /** Stop and join every thread; a run in progress ends with `stopped`. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const t of this.#threads) t.stop();
    this.#finish({ reason: 'stopped' });
  }

  /** Let the running threads keep the process alive (the default), or not. */
  ref(on = true): void {
    for (const t of this.#threads) {
      if (on) t.ref();
      else t.unref();
    }
  }

  #startThreads(): void {
    const { table, onFault } = this.#opts;
    const name = this.#opts.name ?? 'vcpu';
    try {
      for (const v of this.vcpus) {
        this.#threads.push(
          v.startThread(
            {
              onAccess: (isMmio, address, size, isWrite, count, value) =>
                this.#serve(v.id, isMmio, address, size, isWrite, count, value),
              onParked: (why, detail) => this.#parked(v.id, why, detail),
              onFault: (f: VcpuThreadFault) => this.#fault(v.id, f, onFault),
            },
            { table: table ?? null, name: `${name} ${v.id}`, nice: this.#opts.nice ?? 0 },
          ),
        );
      }
    } catch (e) {
      for (const t of this.#threads.splice(0)) t.stop();
      throw e;
    }
  }

  #fault(vcpu: number, f: VcpuThreadFault, onFault: VcpuSetOptions['onFault']): void {
    if (this.#reportFaults) {
      const what = f.isWrite ? 'write' : 'read';
      this.guestErrors.report({
        source: 'kvm',
        kind: 'thread-access-failed',
        where: f.space,
        address: f.address,
        width: f.size,
        write: f.isWrite,
        action: f.isWrite ? 'dropped' : 'read-all-ones',
        message: `vCPU ${vcpu}: ${f.space} ${what} at 0x${f.address.toString(16)} size ${f.size} failed (${f.code})`,
        hint:
          f.code === 'SIGBUS'
            ? 'a BAR vfio-pci revoked (decode off, a reset in progress)'
            : 'the device fd refused it',
        detail: { vcpu, ...f },
      });
    }
    onFault?.(vcpu, f);
  }

  #serve(
    id: number,
    isMmio: boolean,
    address: number,
    size: number,
    isWrite: boolean,
    count: number,
    written: number | bigint,
  ): number | bigint | undefined | Promise<number | bigint | undefined> {
    const routing = this.#opts.routing;
    try {
      const value = routeAccess(routing, isMmio, address, size, isWrite, count, written, this.#count);
      if (routing.stop?.()) this.#finish({ reason: 'stopped' });
      const answer = isWrite ? undefined : value;
      const wait = this.#opts.pending?.() ?? null;
      return wait === null ? answer : wait.then(() => answer);
    } catch (error) {
      // The device model threw: a bug of the VMM's, not the guest's. The read gets all-ones and
      // the run ends with the error, so the owner sees it.
      this.#finish({ reason: 'error', vcpu: id, error });
      return undefined;
    }
  }

  #parked(id: number, why: ParkReason, detail: { exit?: VcpuExit; error?: Error }): void {
    if (why === 'guest-exit' && detail.exit)
      this.#finish({ reason: 'guest-exit', vcpu: id, exit: detail.exit });
    else if (why === 'error') this.#finish({ reason: 'error', vcpu: id, error: detail.error });
  }

  #finish(e: VcpuSetEnd): void {
    if (this.#end === null || this.#ending) return;
    this.#ending = true;
    const end = this.#end;
    if (!this.#stopped) for (const t of this.#threads) void t.pause();
    end(e);
  }
}
