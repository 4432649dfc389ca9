/**
 * A lock file beside the state file, so CLI runs that bind and unbind at the same time never lose
 * each other's entries. Node has no flock(2), so the lock is a file created with O_EXCL holding the
 * owner's PID; a lock whose owner has died (a killed command) is stale and is broken.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import { fileError } from './errors';

/** How long a command waits for another one's lock; state changes hold it for milliseconds. */
export const LOCK_WAIT_MS = 10_000;
const POLL_MS = 5;

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleepSync(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // someone else's process, alive
  }
}

function readOwner(lock: string): number | null {
  try {
    const pid = Number(fs.readFileSync(lock, 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function lockError(lock: string, e: unknown): VfioError {
  return fileError(e, {
    lead: `cannot create the lock file ${lock}`,
    op: 'open',
    path: lock,
    hint: () => 'point --state (or VFIO_BRIDGE_STATE) at a file in a writable directory',
  });
}

/** Take the lock (creating its directory), or throw. Returns when this process holds it. */
function acquire(lock: string, waitMs: number): void {
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fd = fs.openSync(lock, 'wx', 0o644);
      try {
        fs.writeSync(fd, `${process.pid}\n`);
      } finally {
        fs.closeSync(fd);
      }
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw lockError(lock, e);
    }
    const owner = readOwner(lock);
    // An owner that is gone never unlocks. An empty file is a lock being written: wait for it.
    // The owner is read again just before the unlink, so a lock taken meanwhile stays.
    if (owner !== null && !alive(owner) && readOwner(lock) === owner) {
      fs.rmSync(lock, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      throw new VfioError({
        message: `the state file is locked by ${owner === null ? 'another process' : `process ${owner}`} (${lock})`,
        code: 'ETIMEDOUT',
        op: 'lock',
        path: lock,
        hint: `another vfio-bridge is changing drivers; wait for it, or remove ${lock} if no vfio-bridge runs`,
      });
    }
    sleepSync(POLL_MS);
  }
}

/**
 * withStateLock: run `fn` holding the lock of `stateFile` (`stateFile.lock`), and release it
 * whatever `fn` does.
 */
export function withStateLock<T>(stateFile: string, fn: () => T, waitMs = LOCK_WAIT_MS): T {
  const lock = `${stateFile}.lock`;
  acquire(lock, waitMs);
  try {
    return fn();
  } finally {
    fs.rmSync(lock, { force: true });
  }
}
