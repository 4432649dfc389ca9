/**
 * The lab's locks: flock(2) on a file in the cache directory, the same locks the lab has always
 * taken, so runs of any version of the lab wait for each other. Node has no flock, so flock(1)
 * takes it on a descriptor this process shares with it: the lock belongs to the open file, which
 * stays open here after flock(1) exits, until {@link FileLock.release} or the process ends.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

import { LabError } from './errors';

/** The failure of a missing flock(1). */
function noFlock(e: Error): LabError {
  return new LabError({
    message: `cannot run flock: ${e.message}`,
    code: (e as NodeJS.ErrnoException).code ?? 'ENOENT',
    hint: 'install util-linux, which has flock(1)',
  });
}

/** A held lock. */
export class FileLock {
  readonly file: string;
  #fd: number | null;

  private constructor(file: string, fd: number) {
    this.file = file;
    this.#fd = fd;
  }

  /**
   * acquire: lock `file`, waiting up to `waitSeconds` when another process holds it (`onWait` is
   * told once, before the wait). Resolves with the lock and the seconds waited.
   * @throws LabError ELABLOCK when the wait runs out or `signal` aborts it
   */
  static async acquire(
    file: string,
    opts: { waitSeconds: number; what: string; onWait?: () => void; signal?: AbortSignal },
  ): Promise<{ lock: FileLock; waited: number }> {
    const fd = fs.openSync(file, 'a');
    const stdio = ['ignore', 'ignore', 'pipe', fd] as const;
    try {
      const now = spawnSync('flock', ['-n', '3'], { stdio: [...stdio] });
      if (now.error) throw noFlock(now.error);
      if (now.status === 0) return { lock: new FileLock(file, fd), waited: 0 };
      opts.onWait?.();
      const t0 = performance.now();
      const status = await new Promise<number | null>((resolve, reject) => {
        const child = spawn('flock', ['-w', String(opts.waitSeconds), '3'], { stdio: [...stdio] });
        const onAbort = (): void => void child.kill();
        opts.signal?.addEventListener('abort', onAbort, { once: true });
        child.on('error', (e) => reject(noFlock(e)));
        child.on('close', (code) => {
          opts.signal?.removeEventListener('abort', onAbort);
          resolve(code);
        });
      });
      if (status !== 0) {
        throw new LabError({
          message: opts.signal?.aborted
            ? `stopped while waiting for ${opts.what}`
            : `waited ${opts.waitSeconds} s for ${opts.what} (${file})`,
          code: 'ELABLOCK',
          hint: 'another lab run holds it: wait for it, or give a longer --lock-wait',
        });
      }
      return { lock: new FileLock(file, fd), waited: (performance.now() - t0) / 1000 };
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Let the next run in. Idempotent. */
  release(): void {
    if (this.#fd === null) return;
    fs.closeSync(this.#fd);
    this.#fd = null;
  }
}
