import { ArgRangeError, ArgTypeError } from '../base/error';
import { errnoName } from '../base';
import { native, type NativeKvmVcpu } from '../native';
import { kvmError } from './errors';
import { decodeExit, EXIT_RECORD, writeAnswer, writtenValue, type AccessExit, type VcpuExit } from './exit';
import type { ExitSpace, ExitTable } from './exit-table';
import { KVM_EXIT } from './uapi';

/** Why a vCPU thread parked. */
export type ParkReason = 'paused' | 'guest-exit' | 'error';

/** An access the thread served itself that failed; the guest read all-ones or lost its write. */
export interface VcpuThreadFault {
  /** `mmio` or `pio`: which exit table served it. */
  space: ExitSpace;
  /** Guest-physical address or port of the access. */
  address: number;
  /** Length in bytes. */
  size: number;
  /** True for a write (lost), false for a read (given all-ones). */
  isWrite: boolean;
  /** `SIGBUS` (the mapping was revoked: decode off, reset) or the errno name of the pread/pwrite. */
  code: string;
  /** The pread/pwrite's errno (positive), or 0 for SIGBUS. */
  errno: number;
}

/** What a vCPU thread tells its owner, on the owner's thread. */
export interface VcpuThreadHandlers {
  /**
   * Serve an MMIO or port exit the thread could not serve itself; return the value of a read.
   * Optional when {@link VcpuThreadHandlers.onAccess} is given (one of the two is needed).
   * The vCPU waits for this to return, or for the promise it returns to settle (the event loop
   * goes on meanwhile: e.g. until kernel work the access started is done). If it throws, a read
   * gets all-ones and the error is rethrown (an uncaught exception: a handler bug, never a guest's
   * doing); a rejected promise is the same, as an unhandled rejection.
   */
  onExit?(exit: AccessExit): number | bigint | void | Promise<number | bigint | void>;
  /**
   * The same exits as {@link VcpuThreadHandlers.onExit}, as plain values: when given, it is called
   * instead of onExit (which may then be left out), and no object is made per exit. `value` is what
   * a write stores (a number below 8 bytes, a bigint at 8; 0 for a read), `count` the transfers of a
   * port exit (1 for MMIO).
   */
  onAccess?(
    isMmio: boolean,
    address: number,
    size: number,
    isWrite: boolean,
    count: number,
    value: number | bigint,
  ): number | bigint | void | Promise<number | bigint | void>;
  /**
   * The thread parked: `paused` after {@link VcpuThread.pause}, `guest-exit` after an exit only
   * the owner can decide on (`exit`: shutdown, system event, entry failure, ...), `error` when
   * KVM_RUN failed (`error`).
   */
  onParked?(why: ParkReason, detail: { exit?: VcpuExit; error?: Error }): void;
  /** An access served on the thread failed (a revoked BAR, a failed pread or pwrite); a read gave the guest all-ones. */
  onFault?(fault: VcpuThreadFault): void;
}

/** A vCPU thread's counters since it started. */
export interface VcpuThreadStats {
  /** MMIO exits served on the thread from the exit table, without JavaScript. */
  mmio: number;
  /** Port exits served on the thread from the exit table, without JavaScript. */
  pio: number;
  /** Exits handed to JavaScript ({@link VcpuThreadHandlers.onExit}). */
  handoffs: number;
  /** Accesses served on the thread that failed (a revoked mapping, a failed pread or pwrite). */
  faults: number;
  /** KVM_RUN calls. */
  runs: number;
}

/** @internal What a Vcpu hands its thread. */
export interface VcpuThreadPort {
  handle: NativeKvmVcpu;
  exit: DataView;
  path: string;
}

/**
 * A vCPU's own thread (created, named and joined by the addon) running KVM_RUN in a loop, as
 * QEMU's, Firecracker's and Cloud Hypervisor's vCPU threads do: the guest never holds the event
 * loop. Exits in the {@link ExitTable} are served on the thread; the others come to
 * {@link VcpuThreadHandlers.onExit} here, one at a time, while the vCPU waits.
 *
 * States: `running` → {@link pause} → `parked` (also after a guest exit or a KVM error) →
 * {@link resume} → `running`; {@link stop} from any state joins the thread (`stopped`).
 */
export class VcpuThread {
  /** The name given at start (`vcpu <id>` by default); the OS thread gets its first 15 characters. */
  readonly name: string;
  readonly #port: VcpuThreadPort;
  readonly #handlers: VcpuThreadHandlers;
  #state: 'running' | 'pausing' | 'parked' | 'stopped' = 'running';
  #resumes = 0;
  #waiters: (() => void)[] = [];
  // The counters as the thread left them, kept past the vCPU's close.
  #final: VcpuThreadStats | null = null;

  /** @internal Use Vcpu.startThread. */
  constructor(
    port: VcpuThreadPort,
    handlers: VcpuThreadHandlers,
    table: ExitTable | null,
    name: string,
    nice = 0,
  ) {
    if (handlers === null || typeof handlers !== 'object')
      throw new ArgTypeError('startThread: handlers must be an object with onAccess or onExit');
    if (typeof handlers.onExit !== 'function' && typeof handlers.onAccess !== 'function')
      throw new ArgTypeError('startThread: handlers.onAccess or handlers.onExit must be a function');
    for (const k of ['onExit', 'onAccess', 'onParked', 'onFault'] as const) {
      if (handlers[k] !== undefined && typeof handlers[k] !== 'function')
        throw new ArgTypeError(`startThread: handlers.${k} must be a function`);
    }
    this.#port = port;
    this.#handlers = handlers;
    this.name = name;
    if (!Number.isInteger(nice) || nice < -20 || nice > 19)
      throw new ArgRangeError(`startThread: nice ${String(nice)} is not an integer in [-20, 19]`);
    native.kvmVcpuStart(
      port.handle,
      table?._handle ?? null,
      name,
      (kind, a, b, c, d) =>
        kind === 0 ? this.#exit() : kind === 1 ? this.#parked(a, b, d) : this.#fault(a, b, c, d),
      nice,
    );
  }

  /** `running`, `pausing` (asked to park, not parked yet), `parked` or `stopped`. */
  get state(): 'running' | 'pausing' | 'parked' | 'stopped' {
    return this.#state;
  }

  /** The thread's counters: exits served on it, hand-offs, faults, KVM_RUN calls. */
  get stats(): VcpuThreadStats {
    return this.#final ?? native.kvmVcpuStats(this.#port.handle);
  }

  /** Park the thread (it finishes the exit in hand first); resolves once it is parked. */
  pause(): Promise<void> {
    if (this.#state === 'stopped') return Promise.resolve();
    if (this.#state === 'running') {
      this.#state = 'pausing';
      native.kvmVcpuPause(this.#port.handle);
    }
    if (this.#state === 'parked') return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Let a parked (or pausing) thread run the guest again. */
  resume(): void {
    if (this.#state === 'stopped') throw this.#stoppedError('resume');
    if (this.#state === 'running') return;
    native.kvmVcpuResume(this.#port.handle);
    this.#resumes++;
    this.#state = 'running';
  }

  /**
   * Stop and join the thread, wherever it is (in the guest, waiting for an exit's answer, parked).
   * Idempotent; safe from inside a handler.
   */
  stop(): void {
    if (this.#state === 'stopped') return;
    this.#state = 'stopped';
    native.kvmVcpuStop(this.#port.handle);
    this.#final = native.kvmVcpuStats(this.#port.handle);
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Let the running thread keep the process alive (the default). */
  ref(): void {
    if (this.#state !== 'stopped') native.kvmVcpuRef(this.#port.handle, true);
  }

  /** Let the process exit while the thread runs. */
  unref(): void {
    if (this.#state !== 'stopped') native.kvmVcpuRef(this.#port.handle, false);
  }

  #exit(): void {
    const dv = this.#port.exit;
    const R = EXIT_RECORD;
    const reason = dv.getUint32(R.reason, true);
    const isAccess = reason === KVM_EXIT.MMIO || reason === KVM_EXIT.IO;
    const isRead = isAccess && dv.getUint8(R.isWrite) === 0;
    // A read that the handler does not answer (or that throws) reads all-ones.
    if (isRead) writeAnswer(dv, -1);
    const onAccess = this.#handlers.onAccess;
    let value: ReturnType<NonNullable<VcpuThreadHandlers['onExit']>>;
    if (onAccess !== undefined && isAccess) {
      const size = dv.getUint32(R.size, true);
      // The address as two halves: a bigint read would be an allocation per exit.
      const address = dv.getUint32(R.address, true) + dv.getUint32(R.address + 4, true) * 2 ** 32;
      const isMmio = reason === KVM_EXIT.MMIO;
      const count = isMmio ? 1 : dv.getUint32(R.count, true);
      value = onAccess(isMmio, address, size, !isRead, count, isRead ? 0 : writtenValue(dv, size));
    } else {
      const exit = decodeExit(dv, reason) as AccessExit;
      if (exit.isWrite && exit.size !== 8) exit.data = BigInt(writtenValue(dv, exit.size));
      // Only MMIO and port exits are handed over, so with onAccess given this is not reached.
      value = this.#handlers.onExit?.(exit);
    }
    if (!(value instanceof Promise)) {
      if (isRead && value !== undefined) writeAnswer(dv, value);
      return;
    }
    // The vCPU keeps waiting past this return, until the promise settles.
    native.kvmVcpuDefer(this.#port.handle);
    const answer = (v: number | bigint | void): void => {
      if (this.#state === 'stopped') return; // nobody waits any more
      if (isRead && v !== undefined) writeAnswer(dv, v);
      native.kvmVcpuAnswer(this.#port.handle);
    };
    void value.then(answer, (e: unknown) => {
      answer(undefined);
      throw e;
    });
  }

  #parked(why: number, errno: number, generation: number): void {
    if (this.#state === 'stopped') return;
    const reason: ParkReason = why === 0 ? 'paused' : why === 1 ? 'guest-exit' : 'error';
    const dv = this.#port.exit;
    const detail: { exit?: VcpuExit; error?: Error } = {};
    if (why === 1) detail.exit = decodeExit(dv, dv.getUint32(EXIT_RECORD.reason, true));
    if (why === 2) {
      detail.error = kvmError(
        'KVM_RUN',
        errnoName(errno),
        `KVM_RUN failed with errno ${errno}`,
        undefined,
        this.#port.path,
      );
    }
    // A park the owner already resumed from is stale for the state, not for what it reports.
    if (generation === this.#resumes) {
      this.#state = 'parked';
      for (const w of this.#waiters.splice(0)) w();
    }
    if (why !== 0 || generation === this.#resumes) this.#handlers.onParked?.(reason, detail);
  }

  #fault(space: number, address: number, sizeAndWrite: number, errno: number): void {
    this.#handlers.onFault?.({
      space: space === 0 ? 'mmio' : 'pio',
      address,
      size: sizeAndWrite & 0xff,
      isWrite: (sizeAndWrite & 0x100) !== 0,
      code: errno === 0 ? 'SIGBUS' : errnoName(errno),
      errno,
    });
  }

  #stoppedError(op: string): Error {
    return kvmError(op, 'ECLOSED', `${op}: the vCPU thread is stopped`, 'start a new one', this.#port.path);
  }
}
