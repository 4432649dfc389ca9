/**
 * What a command talks to besides the kernel: its output streams, its environment and the operator.
 * `main.ts` binds it to the process; tests bind it to buffers.
 */
import type { SysfsOptions } from '../vfio/sysfs';

export interface CliIo {
  /** Standard output: results (text, or JSON with --json). */
  out(text: string): void;
  /** Standard error: progress, warnings, errors. */
  err(text: string): void;
  /** True when stderr is a terminal: progress redraws one line instead of printing many. */
  readonly errIsTty: boolean;
  /**
   * Ask the operator a yes/no question; null when nobody can answer (stdin is not a terminal).
   */
  confirm(question: string): Promise<boolean | null>;
  readonly env: NodeJS.ProcessEnv;
  /** Aborted when the operator asks to stop (Ctrl-C): long-running commands end cleanly on it. */
  readonly signal?: AbortSignal;
}

/** sysfs options from the environment (VFIO_BRIDGE_SYSFS_ROOT, as the library reads it). */
export function sysfsOf(io: CliIo): SysfsOptions {
  const root = io.env['VFIO_BRIDGE_SYSFS_ROOT'];
  return root ? { sysfsRoot: root } : {};
}

/**
 * A progress line on stderr: redrawn in place on a terminal, otherwise printed only at each
 * quarter so a log keeps a few lines rather than thousands.
 */
export class Progress {
  #last = -1;
  constructor(
    private readonly io: CliIo,
    private readonly label: string,
    private readonly total: number,
    private readonly enabled: boolean,
  ) {}

  update(done: number): void {
    if (!this.enabled || this.total <= 0) return;
    const pct = Math.floor((done * 100) / this.total);
    if (this.io.errIsTty) {
      if (pct === this.#last) return;
      this.#last = pct;
      this.io.err(`\r${this.label}: ${pct}% (${done}/${this.total})${done >= this.total ? '\n' : ''}`);
      return;
    }
    const quarter = Math.floor(pct / 25);
    if (quarter === this.#last) return;
    this.#last = quarter;
    this.io.err(`${this.label}: ${pct}% (${done}/${this.total})\n`);
  }
}
