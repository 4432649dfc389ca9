/**
 * A log for problems a guest can cause as often as it likes: at most one line per interval, the
 * next line saying how many were left out. Shared by the address spaces, the DMA listener and the
 * vfio-pci devices.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';

/** The `log` and `logIntervalMs` options every rate-limited reporter takes. */
export interface RateLimitedLogOptions {
  /** Where lines go. Default: the reporter's process warning; `null` turns logging off. */
  log?: ((line: string) => void) | null;
  /** Minimum time between two lines, in milliseconds. Default 1000. */
  logIntervalMs?: number;
}

export class RateLimitedLog {
  readonly #sink: ((line: string) => void) | null;
  readonly #interval: number;
  #last = -Infinity;
  #suppressed = 0;

  /**
   * Checks `opts` and logs to `opts.log`, or to `fallback` when it is not given.
   * @throws TypeError (log not a function or null), RangeError (interval not a number >= 0)
   */
  constructor(opts: RateLimitedLogOptions, fallback: (line: string) => void) {
    if (opts.log !== undefined && opts.log !== null && typeof opts.log !== 'function') {
      throw new ArgTypeError('log must be a function or null');
    }
    const interval = opts.logIntervalMs ?? 1000;
    if (typeof interval !== 'number' || !(interval >= 0)) {
      throw new ArgRangeError(`logIntervalMs ${String(interval)} is out of range: must be a number >= 0`);
    }
    this.#sink = opts.log === undefined ? fallback : opts.log;
    this.#interval = interval;
  }

  /** Logs one line that is never left out: for setup, where lines are few and bounded. */
  notice(line: string): void {
    this.#sink?.(line);
  }

  /** Logs the line `text` makes (built only when it is written), or counts it as left out. */
  line(text: string | (() => string)): void {
    if (this.#sink === null) return;
    const now = Date.now();
    if (now - this.#last < this.#interval) {
      this.#suppressed++;
      return;
    }
    const more = this.#suppressed > 0 ? ` (${this.#suppressed} more since the last report)` : '';
    this.#last = now;
    this.#suppressed = 0;
    this.#sink((typeof text === 'string' ? text : text()) + more);
  }
}
