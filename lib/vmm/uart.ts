import { ArgRangeError, ArgTypeError } from '../base/error';
import { MemoryRegion } from '../memory';
import { ConsoleOutput } from './console-output';
import * as R from './uart-registers';

/** The port a PC's first serial port (COM1, Linux's ttyS0) decodes, and its ISA IRQ. */
export const COM1_PORT = 0x3f8;
/** COM1's ISA IRQ. */
export const COM1_IRQ = 4;

/** Options of {@link Uart16550}. */
export interface Uart16550Options {
  /** Called with each byte string the guest transmits, as it is written (no buffering). */
  onOutput?: (bytes: Uint8Array) => void;
  /**
   * Asked before each byte goes to `onOutput`: false skips it, and the byte string is not even
   * made (a VMM whose output event has no listener right now). Default: always.
   */
  wantsOutput?: () => boolean;
  /** Called with each complete console line (without its line ending). */
  onLine?: (line: string) => void;
  /**
   * Called when the interrupt output changes level. A VMM with an in-kernel IOAPIC forwards it as
   * KVM_IRQ_LINE on {@link COM1_IRQ} (ISA lines are edge-triggered, so the rising edge is what counts).
   */
  onIrq?: (level: boolean) => void;
  /** How many bytes of output {@link Uart16550.captured} keeps (default 1 MiB; older bytes are dropped). */
  captureLimit?: number;
}

/**
 * Uart16550: the PC's 16550A serial port, modelled far enough for Linux's 8250 driver to detect a
 * 16550A with FIFOs and to run both the polled console and the interrupt-driven tty on it.
 *
 * Transmission is instantaneous: the transmitter is always empty (LSR THRE|TEMT), and a byte written
 * to THR is handed to `onOutput` at once. The THRE interrupt follows QEMU's serial model, which is
 * what Linux's driver probes for: it is pending after each transmitted byte and whenever the guest
 * turns the THRE interrupt enable on while the transmitter is empty, and reading IIR while it is the
 * reported interrupt clears it. Received bytes ({@link Uart16550.input}) go through a 16-byte FIFO;
 * since input has no baud-rate timing here, bytes below the trigger level raise the character-timeout
 * interrupt at once instead of four character times later. In loopback (MCR bit 4) transmitted bytes
 * come back as input and MSR mirrors the MCR outputs, as the 8250 driver's loopback probe expects.
 *
 * Each register is one byte wide: {@link Uart16550.region} takes byte accesses only, so the memory
 * layer cuts a wider guest access into byte accesses of consecutive registers, as QEMU does.
 * Nothing the guest does can make this throw.
 *
 * A VMM may serve the registers whose accesses change nothing at once ({@link Uart16550.quiet}:
 * THR writes, LSR and MSR reads) on its vCPU threads and hand the written bytes over later
 * ({@link Uart16550.transmitBytes}); lib/vmm's UartOnVcpuThreads does. Where the transmitted bytes
 * go (output, lines, the capture) is console-output.ts; the register map is uart-registers.ts.
 */
export class Uart16550 {
  #ier = 0;
  #lcr = 0;
  #mcr = R.MCR_OUT2;
  #lsr = R.LSR_THRE | R.LSR_TEMT;
  #msr = R.MSR_IDLE;
  #scr = 0;
  #dll = 0x0c; // 9600 baud, as after a PC BIOS
  #dlm = 0;
  #fcr = 0;
  #rx: number[] = [];
  #thrPending = false;
  #irqLevel = false;
  readonly #out: ConsoleOutput;
  readonly #onIrq?: (level: boolean) => void;
  #overruns = 0;
  #quietWatchers: (() => void)[] = [];
  #quietKey = -1;

  constructor(opts: Uart16550Options = {}) {
    for (const k of ['onOutput', 'wantsOutput', 'onLine', 'onIrq'] as const) {
      if (opts[k] !== undefined && typeof opts[k] !== 'function') {
        throw new ArgTypeError(`Uart16550 option ${k} must be a function`);
      }
    }
    this.#out = new ConsoleOutput(opts);
    this.#onIrq = opts.onIrq;
  }

  /** The interrupt output's current level. */
  get irqLevel(): boolean {
    return this.#irqLevel;
  }

  /** Bytes the guest has transmitted since creation. */
  get transmitted(): number {
    return this.#out.count;
  }

  /** Received bytes dropped because the FIFO (or the holding register) was full. */
  get overruns(): number {
    return this.#overruns;
  }

  /** The last `captureLimit` bytes of output, decoded as UTF-8 (invalid sequences replaced). */
  get captured(): string {
    return this.#out.captured;
  }

  /**
   * The registers whose accesses change nothing the model must see at once, in the state it is in
   * now, for a VMM that serves them on its vCPU threads (lib/vmm's UartOnVcpuThreads): `thr`, true
   * while a THR write only transmits (the divisor latch and loopback off), so the bytes may be
   * handed to {@link Uart16550.transmitBytes} later and in one go; `lsr`, LSR's value while reading
   * it clears nothing (no overrun flagged), else null; `msr`, MSR's likewise (no change of a modem
   * line latched: the 8250 driver reads it on every interrupt).
   */
  get quiet(): {
    /** True while a THR write only transmits. */
    thr: boolean;
    /** LSR's value while reading it has no effect, else null. */
    lsr: number | null;
    /** MSR's value while reading it has no effect, else null. */
    msr: number | null;
  } {
    return {
      thr: (this.#lcr & R.LCR_DLAB) === 0 && (this.#mcr & R.MCR_LOOP) === 0,
      lsr: this.#lsr & R.LSR_OE ? null : this.#lsr,
      msr: this.#msr & 0x0f ? null : this.#msr,
    };
  }

  /** Calls `fn` each time {@link Uart16550.quiet} changes; returns what stops that. */
  watchQuiet(fn: () => void): () => void {
    if (typeof fn !== 'function') throw new ArgTypeError('Uart16550.watchQuiet: fn must be a function');
    this.#quietWatchers.push(fn);
    this.#quietKey = this.#quietNow();
    return () => {
      this.#quietWatchers = this.#quietWatchers.filter((f) => f !== fn);
    };
  }

  /**
   * Bytes the guest wrote to THR while it was {@link Uart16550.quiet} (served elsewhere and handed
   * over now): transmitted as those writes would have been, and given to `onOutput` in one piece.
   */
  transmitBytes(bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array))
      throw new ArgTypeError('Uart16550.transmitBytes: bytes must be a Uint8Array');
    if (bytes.length === 0) return;
    this.#out.bytes(bytes);
    this.#thrPending = true;
    this.#update();
  }

  /** An I/O region of 8 one-byte registers, to place at {@link COM1_PORT} in the VMM's port space. */
  region(name = 'serial'): MemoryRegion {
    return MemoryRegion.io(name, 8, {
      read: (offset) => this.read(offset),
      write: (offset, _size, value) => this.write(offset, Number(value)),
      valid: { minAccessSize: 1, maxAccessSize: 1 },
      impl: { minAccessSize: 1, maxAccessSize: 1 },
    });
  }

  /** One guest read of the register at `offset` (0-7). */
  read(offset: number): number {
    checkOffset(offset);
    const v = this.#read(offset);
    this.#quietChanged();
    return v;
  }

  #read(offset: number): number {
    const dlab = (this.#lcr & R.LCR_DLAB) !== 0;
    switch (offset) {
      case R.RBR_THR_DLL: {
        if (dlab) return this.#dll;
        const v = this.#rx.shift() ?? 0;
        if (this.#rx.length === 0) this.#lsr &= ~R.LSR_DR;
        this.#update();
        return v;
      }
      case R.IER_DLM:
        return dlab ? this.#dlm : this.#ier;
      case R.IIR_FCR: {
        const iir = this.#iir();
        // Reading IIR while it reports THRE is how a 16550 acknowledges that interrupt.
        if ((iir & 0x0f) === R.IIR_THRI) {
          this.#thrPending = false;
          this.#update();
        }
        return iir;
      }
      case R.LCR:
        return this.#lcr;
      case R.MCR:
        return this.#mcr;
      case R.LSR: {
        const v = this.#lsr;
        this.#lsr &= ~R.LSR_OE;
        this.#update();
        return v;
      }
      case R.MSR: {
        const v = this.#msr;
        this.#msr &= 0xf0;
        this.#update();
        return v;
      }
      case R.SCR:
      default:
        return this.#scr;
    }
  }

  /** One guest write of `value` (its low byte) to the register at `offset` (0-7). */
  write(offset: number, value: number): void {
    checkOffset(offset);
    if (typeof value !== 'number' || !Number.isInteger(value)) {
      throw new ArgTypeError(`Uart16550 write value ${String(value)} is not an integer`);
    }
    this.#write(offset, value & 0xff);
    this.#quietChanged();
  }

  #write(offset: number, v: number): void {
    const dlab = (this.#lcr & R.LCR_DLAB) !== 0;
    switch (offset) {
      case R.RBR_THR_DLL:
        if (dlab) this.#dll = v;
        else this.#transmit(v);
        break;
      case R.IER_DLM:
        if (dlab) {
          this.#dlm = v;
          break;
        }
        {
          const turnedOn = v & ~this.#ier & R.IER_THRI;
          // Only the four standard enables exist: the 8250 driver probes for more (XScale's UUE).
          this.#ier = v & 0x0f;
          if (turnedOn && this.#lsr & R.LSR_THRE) this.#thrPending = true;
          this.#update();
        }
        break;
      case R.IIR_FCR:
        this.#fcr = v & 0xc9; // enable, DMA mode and trigger level are stored; the clears are actions
        if (v & R.FCR_CLEAR_RX) {
          this.#rx.length = 0;
          this.#lsr &= ~R.LSR_DR;
        }
        this.#update();
        break;
      case R.LCR:
        this.#lcr = v;
        break;
      case R.MCR:
        this.#setMcr(v & 0x1f);
        break;
      case R.LSR:
      case R.MSR:
        // Read-only status registers: a write has no effect on a 16550.
        break;
      case R.SCR:
      default:
        this.#scr = v;
    }
  }

  /**
   * Bytes arriving on the line (the host's input to the guest console). Bytes that do not fit in
   * the FIFO are dropped and counted as an overrun, which the guest sees in LS
   */
  input(bytes: Uint8Array | string): void {
    const data = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    if (!(data instanceof Uint8Array))
      throw new ArgTypeError('Uart16550 input must be a Uint8Array or string');
    for (const b of data) this.#receive(b);
    this.#update();
    this.#quietChanged();
  }

  /** Back to the power-on state (the capture and counters are kept). */
  reset(): void {
    this.#ier = 0;
    this.#lcr = 0;
    this.#mcr = R.MCR_OUT2;
    this.#lsr = R.LSR_THRE | R.LSR_TEMT;
    this.#msr = R.MSR_IDLE;
    this.#scr = 0;
    this.#dll = 0x0c;
    this.#dlm = 0;
    this.#fcr = 0;
    this.#rx.length = 0;
    this.#thrPending = false;
    this.#update();
    this.#quietChanged();
  }

  /** {@link Uart16550.quiet} as one number, to tell a change cheaply. */
  #quietNow(): number {
    const q = this.quiet;
    return (q.thr ? 1 : 0) | (((q.lsr ?? -1) + 1) << 1) | (((q.msr ?? -1) + 1) << 10);
  }

  #quietChanged(): void {
    if (this.#quietWatchers.length === 0) return;
    const key = this.#quietNow();
    if (key === this.#quietKey) return;
    this.#quietKey = key;
    for (const fn of this.#quietWatchers) fn();
  }

  #fifoEnabled(): boolean {
    return (this.#fcr & R.FCR_ENABLE) !== 0;
  }

  #transmit(b: number): void {
    if (this.#mcr & R.MCR_LOOP) {
      this.#receive(b);
    } else {
      this.#out.byte(b);
    }
    this.#thrPending = true;
    this.#update();
  }

  #receive(b: number): void {
    const room = this.#fifoEnabled() ? R.FIFO_SIZE : 1;
    if (this.#rx.length >= room) {
      this.#overruns++;
      this.#lsr |= R.LSR_OE;
      return;
    }
    this.#rx.push(b);
    this.#lsr |= R.LSR_DR;
  }

  #setMcr(v: number): void {
    this.#mcr = v;
    const old = this.#msr;
    let lines = R.MSR_IDLE;
    if (v & R.MCR_LOOP) {
      // Loopback wires the outputs back to the inputs: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
      lines =
        (v & R.MCR_RTS ? R.MSR_CTS : 0) |
        (v & R.MCR_DTR ? R.MSR_DSR : 0) |
        (v & R.MCR_OUT1 ? R.MSR_RI : 0) |
        (v & R.MCR_OUT2 ? R.MSR_DCD : 0);
    }
    const changed = (old ^ lines) & 0xf0;
    let delta = old & 0x0f;
    if (changed & R.MSR_CTS) delta |= R.MSR_DCTS;
    if (changed & R.MSR_DSR) delta |= R.MSR_DDSR;
    if (changed & R.MSR_DCD) delta |= R.MSR_DDCD;
    if (old & R.MSR_RI && !(lines & R.MSR_RI)) delta |= R.MSR_TERI;
    this.#msr = lines | delta;
    this.#update();
  }

  #iir(): number {
    const fifo = this.#fifoEnabled() ? R.IIR_FIFO_ENABLED : 0;
    return fifo | this.#pendingId();
  }

  /** The highest-priority pending, enabled interrupt, as IIR bits 3:0. */
  #pendingId(): number {
    if (this.#ier & R.IER_RLSI && this.#lsr & R.LSR_OE) return R.IIR_RLSI;
    if (this.#ier & R.IER_RDI && this.#lsr & R.LSR_DR) {
      if (!this.#fifoEnabled()) return R.IIR_RDI;
      const trigger = R.RX_TRIGGER[this.#fcr >> R.FCR_TRIGGER_SHIFT];
      return this.#rx.length >= trigger ? R.IIR_RDI : R.IIR_CTI;
    }
    if (this.#ier & R.IER_THRI && this.#thrPending) return R.IIR_THRI;
    if (this.#ier & R.IER_MSI && this.#msr & 0x0f) return R.IIR_MSI;
    return R.IIR_NO_INT;
  }

  #update(): void {
    const level = this.#pendingId() !== R.IIR_NO_INT;
    if (level === this.#irqLevel) return;
    this.#irqLevel = level;
    this.#onIrq?.(level);
  }
}

function checkOffset(offset: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset > 7) {
    throw new ArgRangeError(`Uart16550 register offset ${String(offset)} is out of range 0..7`);
  }
}
