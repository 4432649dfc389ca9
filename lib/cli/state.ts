/**
 * The state file: the driver (and driver_override) each device had before the CLI first moved it,
 * so `restore` can put it back. It lives in /run by default, which is emptied at boot exactly as
 * the bindings it describes are forgotten.
 *
 * Format (version 1), written atomically (temporary file + rename):
 * `{ "version": 1, "devices": { "<BDF>": { "driver": "e1000" | null, "driverOverride": string | null,
 * "savedAt": "<ISO 8601>" } }, "groups": { "<N>": { "user": "name", "uid": 1000, "gid": 1000,
 * "savedAt": "<ISO 8601>" } } }`; `groups` (the /dev/vfio/N nodes handed to a user) may be absent.
 *
 * Every change is made under the lock (state-lock.ts) on the file as it is then, re-read, so
 * commands running at the same time keep each other's entries.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import { fileError } from './errors';
import { withStateLock } from './state-lock';

export const DEFAULT_STATE_FILE = '/run/vfio-bridge/drivers.json';
export const STATE_VERSION = 1;

/** What a device had before the CLI first moved it. */
export interface SavedDriver {
  driver: string | null;
  driverOverride: string | null;
  savedAt: string;
}

/** Whom a group's /dev/vfio/N node was handed to (bind --user), so restore gives it back to root. */
export interface GroupOwner {
  user: string;
  uid: number;
  gid: number;
  savedAt: string;
}

interface StateFile {
  version: number;
  devices: Record<string, SavedDriver>;
  groups?: Record<string, GroupOwner>;
}

/** The state file in effect: --state, else VFIO_BRIDGE_STATE, else /run/vfio-bridge/drivers.json. */
export function statePath(explicit: string | undefined, env: NodeJS.ProcessEnv): string {
  return explicit ?? env['VFIO_BRIDGE_STATE'] ?? DEFAULT_STATE_FILE;
}

export class DriverState {
  readonly path: string;
  #data: StateFile;

  private constructor(p: string, data: StateFile) {
    this.path = p;
    this.#data = data;
  }

  /** Read the state file; a missing file is an empty state. */
  static load(p: string): DriverState {
    return new DriverState(p, readState(p));
  }

  get(bdf: string): SavedDriver | undefined {
    return this.#data.devices[bdf];
  }

  /** Whom group `group`'s node was handed to, if anyone. */
  owner(group: number): GroupOwner | undefined {
    return this.#data.groups?.[String(group)];
  }

  /**
   * Remember what `bdf` had, unless something is remembered already (by this command or by one
   * running beside it): the first driver is the one to go back to.
   */
  remember(bdf: string, driver: string | null, driverOverride: string | null): void {
    this.#update((d) => {
      if (d.devices[bdf] !== undefined) return false;
      d.devices[bdf] = { driver, driverOverride, savedAt: new Date().toISOString() };
      return true;
    });
  }

  /**
   * Make the first change to `bdf` with `write` (its driver_override, or its unbind) and remember
   * what `current()` reads it had just before, in one step under the lock, unless something is
   * remembered already. A command beside this one then cannot read the device between another's
   * write and that one's record and take the other's change for the first driver. Nothing is
   * remembered when `write` throws.
   */
  rememberAround(
    bdf: string,
    current: () => { driver: string | null; driverOverride: string | null },
    write: () => void,
  ): void {
    withStateLock(this.path, () => {
      const d = readState(this.path);
      const before = d.devices[bdf] === undefined ? current() : null;
      write();
      if (before !== null) {
        d.devices[bdf] = { ...before, savedAt: new Date().toISOString() };
        writeState(this.path, d);
      }
      this.#data = d;
    });
  }

  forget(bdf: string): void {
    this.#update((d) => d.devices[bdf] !== undefined && delete d.devices[bdf]);
  }

  /** Remember that group `group`'s node now belongs to `user`. */
  rememberOwner(group: number, user: string, uid: number, gid: number): void {
    this.#update((d) => {
      d.groups = { ...d.groups, [String(group)]: { user, uid, gid, savedAt: new Date().toISOString() } };
      return true;
    });
  }

  forgetOwner(group: number): void {
    this.#update((d) => d.groups !== undefined && delete d.groups[String(group)]);
  }

  /** Apply `change` to the file as it is now, under the lock; it says whether anything changed. */
  #update(change: (d: StateFile) => boolean): void {
    withStateLock(this.path, () => {
      const d = readState(this.path);
      if (change(d)) writeState(this.path, d);
      this.#data = d;
    });
  }
}

function readState(p: string): StateFile {
  let text: string;
  try {
    text = fs.readFileSync(p, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: STATE_VERSION, devices: {} };
    throw stateError(p, 'read', e);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    data = null;
  }
  const d = data as StateFile | null;
  if (d === null || d.version !== STATE_VERSION || typeof d.devices !== 'object' || d.devices === null) {
    throw new VfioError({
      message: `${p} is not a vfio-bridge state file (version ${STATE_VERSION})`,
      code: 'EPROTO',
      op: 'read',
      path: p,
      hint: 'move it aside; restore then has nothing to go back to, so bind with --driver NAME instead',
    });
  }
  return d;
}

function writeState(p: string, d: StateFile): void {
  const tmp = `${p}.${process.pid}.tmp`;
  try {
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(tmp, JSON.stringify(d, null, 2) + '\n');
    fs.renameSync(tmp, p);
  } catch (e) {
    throw stateError(p, 'write', e);
  }
}

function stateError(p: string, op: string, e: unknown): VfioError {
  return fileError(e, {
    lead: `cannot ${op} the state file ${p}`,
    op,
    path: p,
    hint: () => 'point --state (or VFIO_BRIDGE_STATE) at a writable file',
  });
}
