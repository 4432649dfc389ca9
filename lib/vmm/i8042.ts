import { ArgRangeError, ArgTypeError } from '../base/error';
import { MemoryRegion } from '../memory';

/** The keyboard controller's data and status/command ports. */
export const I8042_DATA_PORT = 0x60;
/** The keyboard controller's status (read) and command (write) port. */
export const I8042_COMMAND_PORT = 0x64;

/** Status: output buffer full (bit 0); input buffer full is bit 1, always clear here. */
const STATUS_OBF = 0x01;
/** Command 0xfe pulses output port bit 0, the CPU reset line: the PC's classic reboot. */
const CMD_PULSE_RESET = 0xfe;

/** Options of {@link I8042ResetPort}. */
export interface I8042Options {
  /** Called when the guest pulses the reset line (Linux's reboot=kbd, its fallback reboot path). */
  onReset?: () => void;
}

/**
 * I8042ResetPort: just enough of the PC keyboard controller for a machine without a keyboard to be
 * reset the way Linux resets a PC, and for Linux to find no controller quickly.
 *
 * The status register reads 0x01: the input buffer is always empty, so the reset path's wait loop
 * (kb_wait) writes its command at once instead of polling tens of thousands of times, and the output
 * buffer always looks full with nothing in it (data reads 0), which Linux's i8042 driver reads as
 * "No controller found" after flushing 16 bytes, without the half-second timeouts a controller that
 * never answers would cost. Command 0xfe is the reset pulse; every other command and data byte is
 * accepted and ignored, as the port has no keyboard behind it.
 */
export class I8042ResetPort {
  readonly #onReset?: () => void;
  #resets = 0;

  constructor(opts: I8042Options = {}) {
    if (opts.onReset !== undefined && typeof opts.onReset !== 'function') {
      throw new ArgTypeError('I8042ResetPort onReset must be a function');
    }
    this.#onReset = opts.onReset;
  }

  /** Reset pulses seen since creation. */
  get resets(): number {
    return this.#resets;
  }

  /** A 1-byte I/O region for `port` (0x60 or 0x64) in the VMM's port space. */
  region(port: typeof I8042_DATA_PORT | typeof I8042_COMMAND_PORT): MemoryRegion {
    if (port !== I8042_DATA_PORT && port !== I8042_COMMAND_PORT) {
      throw new ArgRangeError(`the i8042 has ports 0x60 and 0x64, not ${String(port)}`);
    }
    return MemoryRegion.io(port === I8042_DATA_PORT ? 'i8042-data' : 'i8042-cmd', 1, {
      read: () => this.read(port),
      write: (_offset, _size, value) => this.write(port, Number(value)),
      valid: { minAccessSize: 1, maxAccessSize: 1 },
    });
  }

  /** One guest read of `port`. */
  read(port: number): number {
    checkPort(port);
    return port === I8042_COMMAND_PORT ? STATUS_OBF : 0;
  }

  /** One guest write of `value` to `port`. */
  write(port: number, value: number): void {
    checkPort(port);
    if (port === I8042_COMMAND_PORT && (value & 0xff) === CMD_PULSE_RESET) {
      this.#resets++;
      this.#onReset?.();
    }
  }
}

function checkPort(port: number): void {
  if (port !== I8042_DATA_PORT && port !== I8042_COMMAND_PORT) {
    throw new ArgRangeError(`the i8042 has ports 0x60 and 0x64, not ${String(port)}`);
  }
}
