import { ArgRangeError, ArgTypeError } from '../base/error';
import { MemoryRegion } from '../memory';

/** The CMOS index and data ports. */
export const CMOS_INDEX_PORT = 0x70;
/** The CMOS data port: reads and writes the register the index port selected. */
export const CMOS_DATA_PORT = 0x71;

const SECONDS = 0x00;
const MINUTES = 0x02;
const HOURS = 0x04;
const DAY_OF_WEEK = 0x06;
const DAY_OF_MONTH = 0x07;
const MONTH = 0x08;
const YEAR = 0x09;
const REG_A = 0x0a;
const REG_B = 0x0b;
const REG_C = 0x0c;
const REG_D = 0x0d;
/** The century byte, where PC firmware keeps it (ACPI's FADT names it; Linux reads it). */
const CENTURY = 0x32;

const B_SET = 0x80;
const B_BINARY = 0x04;
const B_24H = 0x02;
const D_VRT = 0x80;
const TIME_REGS = [SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY];

/** Options of {@link CmosRtc}. */
export interface CmosRtcOptions {
  /** The clock the RTC follows, in milliseconds since the epoch (default `Date.now`). */
  now?: () => number;
}

/**
 * CmosRtc: the PC's MC146818 real-time clock and its CMOS RAM behind ports 0x70/0x71, far enough
 * for Linux to read and set the time (read_persistent_clock, rtc_cmos, hwclock).
 *
 * Without it every access reads all-ones, and Linux waits on the update-in-progress bit of register
 * A that never clears: tens of thousands of port exits at boot. Here the update cycle is
 * instantaneous (UIP always reads 0), the time is the host's UTC plus whatever offset the guest sets
 * (time registers written while register B's SET bit is on take effect when it goes off), in BCD or
 * binary and 12- or 24-hour form as register B selects, and register D reports valid RAM and time.
 * Periodic, alarm and update-ended interrupts are not generated (register C reads 0); the rest of
 * the 128 bytes is plain RAM. Bit 7 of the index port, NMI disable, is accepted and ignored.
 */
export class CmosRtc {
  #index = 0;
  #ram = new Uint8Array(128);
  #offsetMs = 0;
  /** Time fields the guest wrote while SET was on, applied when it goes off. */
  #pending: number[] | null = null;
  readonly #now: () => number;

  constructor(opts: CmosRtcOptions = {}) {
    if (opts.now !== undefined && typeof opts.now !== 'function')
      throw new ArgTypeError('CmosRtc now must be a function');
    this.#now = opts.now ?? Date.now;
    this.#ram[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz rate: what firmware programs
    this.#ram[REG_B] = B_24H;
    this.#ram[REG_D] = D_VRT;
  }

  /** The guest's clock minus the host's, in milliseconds. */
  get offsetMs(): number {
    return this.#offsetMs;
  }

  /** A 2-port I/O region for {@link CMOS_INDEX_PORT} in the VMM's port space. */
  region(name = 'rtc'): MemoryRegion {
    return MemoryRegion.io(name, 2, {
      read: (offset) => this.read(CMOS_INDEX_PORT + offset),
      write: (offset, _size, value) => this.write(CMOS_INDEX_PORT + offset, Number(value)),
      valid: { minAccessSize: 1, maxAccessSize: 1 },
    });
  }

  /** One guest read of port 0x70 or 0x71. */
  read(port: number): number {
    checkPort(port);
    // The index register is write-only on a PC; QEMU reads it as all-ones too.
    if (port === CMOS_INDEX_PORT) return 0xff;
    const i = this.#index;
    if (i === REG_A) return this.#ram[REG_A] & 0x7f; // UIP: no update is ever in progress
    if (i === REG_C) return 0;
    if (TIME_REGS.includes(i)) return this.#timeField(i);
    return this.#ram[i];
  }

  /** One guest write of `value` to port 0x70 or 0x71. */
  write(port: number, value: number): void {
    checkPort(port);
    const v = value & 0xff;
    if (port === CMOS_INDEX_PORT) {
      this.#index = v & 0x7f;
      return;
    }
    const i = this.#index;
    if (i === REG_C || i === REG_D) return; // read-only status
    if (i === REG_A) {
      this.#ram[REG_A] = v & 0x7f;
      return;
    }
    if (i === REG_B) {
      const wasSet = (this.#ram[REG_B] & B_SET) !== 0;
      this.#ram[REG_B] = v;
      if (!wasSet && v & B_SET) this.#pending = TIME_REGS.map((r) => this.#timeField(r));
      if (wasSet && !(v & B_SET)) this.#applyPending();
      return;
    }
    if (TIME_REGS.includes(i)) {
      if (this.#ram[REG_B] & B_SET && this.#pending) {
        this.#pending[TIME_REGS.indexOf(i)] = v;
      } else {
        // A write outside a SET cycle sets that one field: fold it into the offset the same way.
        this.#pending = TIME_REGS.map((r) => this.#timeField(r));
        this.#pending[TIME_REGS.indexOf(i)] = v;
        this.#applyPending();
      }
      return;
    }
    this.#ram[i] = v;
  }

  #encode(n: number): number {
    return this.#ram[REG_B] & B_BINARY ? n : ((n / 10) | 0) * 16 + (n % 10);
  }

  #decode(v: number): number {
    return this.#ram[REG_B] & B_BINARY ? v : (v >> 4) * 10 + (v & 0xf);
  }

  #timeField(reg: number): number {
    const d = new Date(this.#now() + this.#offsetMs);
    switch (reg) {
      case SECONDS:
        return this.#encode(d.getUTCSeconds());
      case MINUTES:
        return this.#encode(d.getUTCMinutes());
      case HOURS: {
        const h = d.getUTCHours();
        if (this.#ram[REG_B] & B_24H) return this.#encode(h);
        return this.#encode(h % 12 || 12) | (h >= 12 ? 0x80 : 0);
      }
      case DAY_OF_WEEK:
        return this.#encode(d.getUTCDay() + 1);
      case DAY_OF_MONTH:
        return this.#encode(d.getUTCDate());
      case MONTH:
        return this.#encode(d.getUTCMonth() + 1);
      case YEAR:
        return this.#encode(d.getUTCFullYear() % 100);
      default:
        return this.#encode(Math.floor(d.getUTCFullYear() / 100));
    }
  }

  #applyPending(): void {
    const p = this.#pending;
    this.#pending = null;
    if (!p) return;
    const field = (reg: number) => this.#decode(p[TIME_REGS.indexOf(reg)]);
    let hours: number;
    const rawHours = p[TIME_REGS.indexOf(HOURS)];
    if (this.#ram[REG_B] & B_24H) hours = field(HOURS);
    else hours = (this.#decode(rawHours & 0x7f) % 12) + (rawHours & 0x80 ? 12 : 0);
    const t = Date.UTC(
      field(CENTURY) * 100 + field(YEAR),
      field(MONTH) - 1,
      field(DAY_OF_MONTH),
      hours,
      field(MINUTES),
      field(SECONDS),
    );
    // A guest writing nonsense (month 0x99) gets a nonsense date, as from a real RTC, never an exception.
    if (Number.isFinite(t)) this.#offsetMs = t - Math.floor(this.#now() / 1000) * 1000;
  }
}

function checkPort(port: number): void {
  if (port !== CMOS_INDEX_PORT && port !== CMOS_DATA_PORT) {
    throw new ArgRangeError(`the CMOS RTC has ports 0x70 and 0x71, not ${String(port)}`);
  }
}
