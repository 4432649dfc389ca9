/**
 * Removing a mediated device: `1` written to its `remove`.
 *
 * What the kernel does while the device is open: it blocks. The write takes `remove` away, stops new
 * opens, and then waits in the kernel (vfio_unregister_group_dev) until every VFIO fd of the device
 * is closed; a signal turns that wait uninterruptible, so the writer can be neither interrupted nor
 * killed until then. Written from the process that holds the fd, that is a deadlock; written from the
 * event loop's thread, the loop would stop; even from the libuv thread pool, the process could not
 * exit (Node joins the pool's threads at exit).
 *
 * So vfio-bridge never writes it in this process. It first looks for holders (this process's own
 * Device objects, and every process holding the device's group node or cdev), and by default refuses
 * with EBUSY naming them. Asked to wait, it makes the write from a short-lived helper process: the
 * removal is then final at once (the device cannot be opened again), and it completes when the last
 * fd closes; the promise settles then, or with EPENDING at the caller's deadline while the helper
 * goes on waiting. It cannot be undone once started.
 */
import { spawn } from 'node:child_process';

import { AbortError } from '../../base/error';
import { VfioError } from '../../base/native-errors';
import type { SysfsOptions } from '../sysfs';
import { describeHolders, mdevHolders, type MdevHolder, type ProcOptions } from './holders';
import { findMdev, mdevDevice, type MdevDevice } from './sysfs';
import * as path from 'node:path';

/** Options of {@link removeMdev}. */
export interface RemoveMdevOptions extends SysfsOptions, ProcOptions {
  /**
   * When the device may be open (this process has it, or a process holds its group or cdev):
   * `'refuse'` (default) throws EBUSY naming the holders and writes nothing; `'wait'` starts the
   * removal and settles when the kernel has finished it, once the last fd is closed.
   */
  whenOpen?: 'refuse' | 'wait';
  /**
   * How long to wait for the kernel once the removal is written (default: 10 s when refusing, no
   * limit when waiting). Past it the promise rejects with EPENDING; the removal goes on.
   */
  timeoutMs?: number;
  /** Stops waiting (the promise rejects with an AbortError); the removal, once written, goes on. */
  signal?: AbortSignal;
}

/** What {@link removeMdev} did. */
export interface MdevRemoval {
  /** The removed device's UUID. */
  readonly uuid: string;
  /** Its parent's name in /sys/class/mdev_bus. */
  readonly parent: string;
  /** The mdev type it was created as (`mtty-2`, ...). */
  readonly type: string;
  /** The processes that held the device when the removal started (with `whenOpen: 'wait'`). */
  readonly heldBy: readonly MdevHolder[];
  /** Milliseconds from the write to the kernel's answer (how long it waited for the fds). */
  readonly ms: number;
}

/** The helper's program: report that it writes, write, report how it ended. */
const HELPER = [
  "const fs = require('fs');",
  "process.stdout.write('writing\\n');",
  "try { fs.writeFileSync(process.argv[1], '1'); process.exit(0); }",
  'catch (e) { process.stdout.write(JSON.stringify({ code: e.code, errno: e.errno, message: e.message }) + "\\n"); process.exit(1); }',
].join('\n');

/**
 * removeMdev: remove mediated device `uuid`. Never blocks this process, whatever holds the device.
 * @throws VfioError ENOENT (no such device, with the ones there are), EBUSY (open, with
 * `whenOpen: 'refuse'`: who holds it), EALREADY (a removal is under way), EPENDING (the kernel still
 * waits for the fds at the deadline: the removal goes on), EACCES (not root), or the kernel's refusal
 */
export async function removeMdev(uuid: string, opts: RemoveMdevOptions = {}): Promise<MdevRemoval> {
  opts.signal?.throwIfAborted();
  const d = mdevDevice(uuid, opts);
  const held = mdevHolders(d, opts);
  const holdersText = describeHolders(held);
  if (d.removing) {
    throw new VfioError({
      message: `mediated device ${d.uuid} is already being removed: the kernel waits for its VFIO fds to close`,
      code: 'EALREADY',
      op: 'write',
      path: path.join(d.path, 'remove'),
      bdf: d.uuid,
      hint: holdersText
        ? `it goes when these close it: ${holdersText}`
        : 'it goes when the last fd of it closes (held by a process this one cannot see)',
    });
  }
  const open = holdersText !== '';
  const whenOpen = opts.whenOpen ?? 'refuse';
  if (open && whenOpen === 'refuse') {
    throw new VfioError({
      message: `mediated device ${d.uuid} may be open: ${holdersText}`,
      code: 'EBUSY',
      errno: 16,
      op: 'write',
      path: path.join(d.path, 'remove'),
      bdf: d.uuid,
      hint:
        "the kernel's removal waits, unkillable, until every VFIO fd of the device is closed: close " +
        "it first; or wait for it (vfio-bridge mdev remove --wait, removeMdev(uuid, { whenOpen: 'wait' })), " +
        'which removes it as soon as the last fd closes',
    });
  }
  const timeoutMs = opts.timeoutMs ?? (whenOpen === 'wait' ? undefined : 10_000);
  const t0 = await writeRemove(d, timeoutMs, opts.signal, holdersText, held.unreadable);
  const left = findMdev(d.uuid, opts);
  if (left !== null && !left.removing) {
    throw new VfioError({
      message: `the kernel took the removal of ${d.uuid}, but the device is still there`,
      code: 'EPROTO',
      op: 'write',
      path: path.join(d.path, 'remove'),
      bdf: d.uuid,
      hint: 'check dmesg for what its driver said',
    });
  }
  return { uuid: d.uuid, parent: d.parent, type: d.type, heldBy: held.holders, ms: t0 };
}

/** Writes `remove` from a helper process; resolves with the kernel's time once it answered. */
function writeRemove(
  d: MdevDevice,
  timeoutMs: number | undefined,
  signal: AbortSignal | undefined,
  holdersText: string,
  unreadable: number,
): Promise<number> {
  const file = path.join(d.path, 'remove');
  return new Promise<number>((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', HELPER, file], {
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    let out = '';
    let started: number | null = null;
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const letGo = (): void => {
      // The helper waits on in the kernel; this process must not wait for it.
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      child.stdout.destroy();
      child.unref();
    };
    const pending = (why: string, cause?: unknown): VfioError =>
      new VfioError({
        message: `the removal of ${d.uuid} is pending: ${why}; the kernel removes it once every VFIO fd of it is closed`,
        code: 'EPENDING',
        op: 'write',
        path: file,
        bdf: d.uuid,
        cause,
        hint:
          (holdersText
            ? `close it in: ${holdersText}`
            : `no holder was seen${unreadable > 0 ? ` (${unreadable} processes could not be looked at: run as root to see them)` : ''}`) +
          `; helper pid ${child.pid} keeps waiting. It cannot be undone: the device can no longer be opened`,
      });
    const onAbort = (): void => {
      if (settled) return;
      const aborted = new AbortError(`removal of ${d.uuid}`, signal?.reason);
      if (started === null) {
        // Not written yet (or being written this instant): stop the helper, nothing changes.
        child.kill();
        letGo();
        reject(aborted);
        return;
      }
      letGo();
      reject(pending('waiting for it was aborted', aborted));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (started === null && out.startsWith('writing\n')) {
        started = performance.now();
        if (timeoutMs !== undefined) {
          timer = setTimeout(() => {
            if (settled) return;
            letGo();
            reject(pending(`the kernel has waited ${timeoutMs} ms`));
          }, timeoutMs);
        }
      }
    });
    child.on('error', (e) => {
      if (settled) return;
      letGo();
      reject(
        new VfioError({
          message: `cannot start the helper that removes ${d.uuid}: ${e.message}`,
          code: (e as NodeJS.ErrnoException).code ?? 'EIO',
          op: 'spawn',
          path: process.execPath,
          bdf: d.uuid,
          cause: e,
        }),
      );
    });
    child.on('close', (status) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      const ms = started === null ? 0 : performance.now() - started;
      if (status === 0) {
        resolve(ms);
        return;
      }
      reject(removeFailed(d, file, out));
    });
  });
}

/** The helper's report of a refused write, as a VfioError with what the errno means for `remove`. */
function removeFailed(d: MdevDevice, file: string, out: string): VfioError {
  const line = out.split('\n').find((l) => l.startsWith('{'));
  let r: { code?: string; errno?: number; message?: string } = {};
  try {
    r = line ? (JSON.parse(line) as typeof r) : {};
  } catch {
    r = {};
  }
  const hints: Record<string, string> = {
    EACCES: 'removing a mediated device needs root (or write access to its remove file)',
    EPERM: 'removing a mediated device needs root (or write access to its remove file)',
    ENOENT: 'it is gone already, or its removal is under way',
    EAGAIN: 'a removal of it is already under way',
    ENODEV: `its parent ${d.parent} is being unregistered (its driver is unloading), which removes it`,
  };
  return new VfioError({
    message: `cannot remove ${d.uuid}: ${r.message ?? `the helper ended without saying why (${out.trim() || 'no output'})`}`,
    code: r.code ?? 'EIO',
    ...(typeof r.errno === 'number' ? { errno: r.errno } : {}),
    op: 'write',
    path: file,
    bdf: d.uuid,
    hint: (r.code !== undefined ? hints[r.code] : undefined) ?? 'check dmesg for what its driver said',
  });
}
