import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { KvmError, Mapping, memfd, VfioError } from '../../lib';

/** A memfd of `size` bytes and a writable mapping of all of it; `dispose()` cleans up both. */
export function memfdMapping(size: number, name = 'vfio-bridge-test') {
  const fd = memfd(name, size);
  const mapping = Mapping.fromFd(fd, 0, size);
  return {
    fd,
    mapping,
    /** The file's bytes as seen through the fd (not through the mapping). */
    bytes(offset: number, length: number): Buffer {
      const b = Buffer.alloc(length);
      fs.readSync(fd, b, 0, length, offset);
      return b;
    },
    dispose() {
      mapping.close();
      fs.closeSync(fd);
    },
  };
}

/** A fresh temporary directory, removed by the returned function. */
export function tempDir(prefix = 'vfio-bridge-'): { dir: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** The repository root. */
export const ROOT = path.join(__dirname, '..', '..');

/**
 * The VfioError (or, from lib/kvm, KvmError) `fn` throws; anything else it throws, or nothing,
 * fails the test.
 */
export function caught(fn: () => unknown): VfioError {
  try {
    fn();
  } catch (e) {
    if (e instanceof VfioError) return e;
    if (e instanceof KvmError) return e as unknown as VfioError;
    throw e;
  }
  throw new Error('expected a VfioError');
}

/** Waits on the event loop, 5 ms at a time, until `done` (at most a second). */
export async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !done(); i++) await new Promise((r) => setTimeout(r, 5));
}
