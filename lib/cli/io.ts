/**
 * What a command talks to besides the kernel: its output streams, its environment and the operator.
 * `main.ts` binds it to the process; tests bind it to buffers.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { SysfsOptions } from '../vfio/sysfs';
import { fileError } from './errors';
import type { HostUseOptions } from './host-use';

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
  /** The environment the command reads: `VFIO_BRIDGE_*` (roots for fakes, lab settings), `CI`, `PATH`. */
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
 * Where the host-use checks look, from the environment: VFIO_BRIDGE_PROC_ROOT (default /proc) and
 * VFIO_BRIDGE_IP (the `ip` command), so tests point them at fakes.
 */
export function hostUseOf(io: CliIo): HostUseOptions {
  const procRoot = io.env['VFIO_BRIDGE_PROC_ROOT'];
  const ipCommand = io.env['VFIO_BRIDGE_IP'];
  return { ...sysfsOf(io), ...(procRoot ? { procRoot } : {}), ...(ipCommand ? { ipCommand } : {}) };
}

/**
 * writeOutputFile: write `text` to a file the operator named (`what` says which, e.g. `the SVG`).
 * A failure is a VfioError (exit 1) with the path, Node's errno name and what to do about it.
 */
export function writeOutputFile(file: string, text: string, what: string): void {
  try {
    fs.writeFileSync(file, text);
  } catch (e) {
    throw fileError(e, {
      lead: `cannot write ${what} to ${file}`,
      op: 'write',
      path: file,
      hint: (code) => {
        if (code === 'ENOENT') return `${path.dirname(file)} does not exist: create it, or name another file`;
        if (code === 'EISDIR')
          return `${file} is a directory: name a file, e.g. ${path.join(file, 'map.svg')}`;
        if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
          return `${file} cannot be written here: name a file in a writable directory`;
        }
        return `name another file for ${what}`;
      },
    });
  }
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
