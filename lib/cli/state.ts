/**
 * The state file: the driver (and driver_override) each device had before the CLI first moved it,
 * so `restore` can put it back. It lives in /run by default, which is emptied at boot exactly as
 * the bindings it describes are forgotten.
 *
 * Format (version 1), written atomically (temporary file + rename):
 * `{ "version": 1, "devices": { "<BDF>": { "driver": "e1000" | null, "driverOverride": string | null,
 * "savedAt": "<ISO 8601>" } } }`
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import { fileError } from './errors';

export const DEFAULT_STATE_FILE = '/run/vfio-bridge/drivers.json';
export const STATE_VERSION = 1;

/** What a device had before the CLI first moved it. */
export interface SavedDriver {
  driver: string | null;
  driverOverride: string | null;
  savedAt: string;
}

interface StateFile {
  version: number;
  devices: Record<string, SavedDriver>;
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
    let text: string;
    try {
      text = fs.readFileSync(p, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT')
        return new DriverState(p, { version: 1, devices: {} });
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
    return new DriverState(p, d);
  }

  get(bdf: string): SavedDriver | undefined {
    return this.#data.devices[bdf];
  }

  /** Remember what `bdf` had, unless something is remembered already: the first driver is the one to go back to. */
  remember(bdf: string, driver: string | null, driverOverride: string | null): void {
    if (this.#data.devices[bdf] !== undefined) return;
    this.#data.devices[bdf] = { driver, driverOverride, savedAt: new Date().toISOString() };
    this.#save();
  }

  forget(bdf: string): void {
    if (this.#data.devices[bdf] === undefined) return;
    delete this.#data.devices[bdf];
    this.#save();
  }

  #save(): void {
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      fs.mkdirSync(path.dirname(this.path), { recursive: true });
      fs.writeFileSync(tmp, JSON.stringify(this.#data, null, 2) + '\n');
      fs.renameSync(tmp, this.path);
    } catch (e) {
      throw stateError(this.path, 'write', e);
    }
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
