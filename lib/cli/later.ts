/**
 * Commands whose machinery lands separately: hot reset (`reset --hot`) and live interrupt counts
 * (`irqs --watch`). The commands are wired to these hooks; until a hook is set they fail with a
 * plain "not available yet". Wiring one is setting it, e.g. in program.ts:
 * `later.hotReset = (bdf, sysfs) => hotResetGroupOf(bdf, sysfs)`.
 */
import { VfioError } from '../vfio/errors';
import type { SysfsOptions } from '../vfio/sysfs';
import type { CliIo } from './io';

export interface IrqWatchOptions {
  /** Milliseconds between two printed samples. */
  intervalMs: number;
  /** Stop after this many samples (default: until interrupted). */
  samples: number | undefined;
  json: boolean;
}

export interface LaterHooks {
  /** A hot (secondary bus) reset of the device's slot or bus. */
  hotReset: ((bdf: string, sysfs: SysfsOptions) => Promise<void> | void) | null;
  /** Print live interrupt counts per vector until stopped. */
  watchIrqs: ((bdf: string, io: CliIo, opts: IrqWatchOptions) => Promise<void>) | null;
}

export const later: LaterHooks = { hotReset: null, watchIrqs: null };

/** The error for a command whose machinery is not in this build. */
export function notAvailable(what: string, bdf: string): VfioError {
  return new VfioError({
    message: `${what} is not available yet in this version of vfio-bridge`,
    code: 'ENOTSUP',
    op: what,
    bdf,
    hint: 'it arrives with interrupt and hot-reset support; until then use the function reset (`reset` without --hot) and `irqs` without --watch',
  });
}
