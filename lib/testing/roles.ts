/**
 * Devices by role: a test asks for `nic` or `edu`, and the machine running it says which device
 * plays that role. A role's selector is a PCI address (`0000:00:03.0`, `00:03.0`), a vendor:device
 * pair (`8086:10d3`), or a class (`0x020000` for the full 24-bit code, `class:02` or `class:0200`
 * for its leading bytes). A pair or a class may match several devices: the first in address order
 * is taken, or the one a `#N` suffix names (`8086:10d3#1`, from 0).
 *
 * The config comes from, in rising precedence: `VFIO_BRIDGE_HIL_DEVICES` (the lab's `role=BDF`
 * list), `VFIO_BRIDGE_DEVICES` (`role=selector,role=selector`), the JSON file named by
 * `VFIO_BRIDGE_DEVICES_FILE` (`{ "nic": "8086:10d3" }`), and the object a test passes.
 */
import * as fs from 'node:fs';

import { ArgTypeError, VfioBridgeError } from '../base/error';
import { listDevices, type PciDeviceEntry } from '../cli/pci-sysfs';
import { normalizeBdf, sysfsRoot, type SysfsOptions } from '../vfio/sysfs';

/** A parsed selector. */
export type DeviceSelector =
  | {
      /** A PCI address: one device. */
      kind: 'bdf';
      /** The selector as written (trimmed). */
      text: string;
      /** The address, normalized to `0000:00:03.0` form. */
      bdf: string;
    }
  | {
      /** A vendor:device pair. */
      kind: 'id';
      /** The selector as written (trimmed). */
      text: string;
      /** Vendor ID. */
      vendor: number;
      /** Device ID. */
      device: number;
      /** Which match to take (`#N`, from 0), or undefined for the first. */
      index: number | undefined;
    }
  | {
      /** A class code, whole or its leading bytes. */
      kind: 'class';
      /** The selector as written (trimmed). */
      text: string;
      /** The 24-bit class code, with the bytes not given as zeros. */
      classCode: number;
      /** How many leading bytes of the class code must match (3 for the full code). */
      bytes: 1 | 2 | 3;
      /** Which match to take (`#N`, from 0), or undefined for the first. */
      index: number | undefined;
    };

/** Role to selector text, as a test or a config file gives it. */
export type DeviceConfig = Readonly<Record<string, string>>;

/** Where roles are looked up. */
export interface RoleOptions extends SysfsOptions {
  /** Roles given by the test; they win over the environment's. */
  devices?: DeviceConfig;
  /** The environment to read (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

/** A role resolved to one device, or the reason it cannot be. */
export type RoleResolution =
  | {
      /** PCI address of the device playing the role. */
      bdf: string;
      /** The role's selector, as parsed. */
      selector: DeviceSelector;
      /** The device as sysfs lists it (IDs, class, driver, IOMMU group). */
      entry: PciDeviceEntry;
      /** Always undefined here. */
      skip?: undefined;
    }
  | {
      /** Why no device plays the role here. */
      skip: string;
      /** Always undefined here. */
      bdf?: undefined;
    };

const BDF_RE = /^(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/i;
const ID_RE = /^([0-9a-f]{4}):([0-9a-f]{4})$/i;
const CLASS_FULL_RE = /^0x([0-9a-f]{6})$/i;
const CLASS_PREFIX_RE = /^class:((?:[0-9a-f]{2}){1,3})$/i;

/** A bad device config: `code` is `'EDEVCONFIG'`, `hint` shows the accepted forms. */
function configError(message: string, source: string, cause?: unknown): VfioBridgeError {
  return new VfioBridgeError({
    message: `${source}: ${message}`,
    code: 'EDEVCONFIG',
    cause,
    hint:
      'a selector is a PCI address (0000:00:03.0), vendor:device (8086:10d3), or a class ' +
      '(0x020000, class:0200), the last two optionally with #N to take the Nth match (from 0)',
  });
}

/**
 * parseSelector: `text` as a selector.
 * @throws VfioBridgeError EDEVCONFIG when it is none of the accepted forms
 */
export function parseSelector(text: string, source = 'selector'): DeviceSelector {
  if (typeof text !== 'string') throw new ArgTypeError(`${source}: a selector must be a string`);
  const s = text.trim();
  const hash = s.indexOf('#');
  const base = hash < 0 ? s : s.slice(0, hash);
  let index: number | undefined;
  if (hash >= 0) {
    const n = s.slice(hash + 1);
    if (!/^[0-9]+$/.test(n)) throw configError(`${JSON.stringify(text)}: #${n} is not an index`, source);
    index = Number(n);
  }
  if (BDF_RE.test(base)) {
    if (index !== undefined) {
      throw configError(`${JSON.stringify(text)}: a PCI address names one device, #N does not apply`, source);
    }
    return { kind: 'bdf', text: s, bdf: normalizeBdf(base) };
  }
  const id = ID_RE.exec(base);
  if (id) return { kind: 'id', text: s, vendor: parseInt(id[1], 16), device: parseInt(id[2], 16), index };
  const full = CLASS_FULL_RE.exec(base);
  if (full) return { kind: 'class', text: s, classCode: parseInt(full[1], 16), bytes: 3, index };
  const prefix = CLASS_PREFIX_RE.exec(base);
  if (prefix) {
    const bytes = (prefix[1].length / 2) as 1 | 2 | 3;
    return { kind: 'class', text: s, classCode: parseInt(prefix[1], 16) << (8 * (3 - bytes)), bytes, index };
  }
  throw configError(`${JSON.stringify(text)} is not a device selector`, source);
}

/** `role=selector,role=selector`, as the environment variables give it. */
export function parseDeviceList(spec: string, source: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of spec.split(',')) {
    const t = item.trim();
    if (t === '') continue;
    const m = /^([A-Za-z0-9_.-]+)\s*=\s*(.+)$/.exec(t);
    if (!m) throw configError(`${JSON.stringify(t)} is not role=selector`, source);
    parseSelector(m[2], `${source} (role ${m[1]})`);
    out[m[1]] = m[2].trim();
  }
  return out;
}

function readConfigFile(file: string): Record<string, string> {
  const source = `VFIO_BRIDGE_DEVICES_FILE ${file}`;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw configError(`cannot read it: ${(e as Error).message}`, source, e);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw configError(`not JSON: ${(e as Error).message}`, source, e);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw configError('must be a JSON object of role to selector', source);
  }
  const out: Record<string, string> = {};
  for (const [role, sel] of Object.entries(data)) {
    if (typeof sel !== 'string') throw configError(`role ${role}: the selector must be a string`, source);
    parseSelector(sel, `${source} (role ${role})`);
    out[role] = sel.trim();
  }
  return out;
}

/**
 * deviceConfig: every role the environment and `opts.devices` define, later sources winning.
 * @throws VfioBridgeError EDEVCONFIG on a malformed variable, file or selector
 */
export function deviceConfig(opts: RoleOptions = {}): Record<string, string> {
  const env = opts.env ?? process.env;
  const hil = env['VFIO_BRIDGE_HIL_DEVICES'];
  const list = env['VFIO_BRIDGE_DEVICES'];
  const file = env['VFIO_BRIDGE_DEVICES_FILE'];
  const explicit: Record<string, string> = {};
  for (const [role, sel] of Object.entries(opts.devices ?? {})) {
    parseSelector(sel, `devices (role ${role})`);
    explicit[role] = sel;
  }
  return {
    ...(hil ? parseDeviceList(hil, 'VFIO_BRIDGE_HIL_DEVICES') : {}),
    ...(list ? parseDeviceList(list, 'VFIO_BRIDGE_DEVICES') : {}),
    ...(file ? readConfigFile(file) : {}),
    ...explicit,
  };
}

const hex = (v: number, digits: number): string => v.toString(16).padStart(digits, '0');

/** Whether `dev` matches a pair or class selector. */
function matches(sel: DeviceSelector, dev: PciDeviceEntry): boolean {
  if (sel.kind === 'id') return dev.vendor === sel.vendor && dev.device === sel.device;
  if (sel.kind === 'class')
    return dev.classCode >>> (8 * (3 - sel.bytes)) === sel.classCode >>> (8 * (3 - sel.bytes));
  return dev.bdf === sel.bdf;
}

/**
 * resolveRole: the device playing `role`, or why there is none (never configured, nothing matches,
 * fewer matches than the index asks for). Reads sysfs only; opens nothing.
 * @throws VfioBridgeError EDEVCONFIG when the config is malformed (a broken config is not a skip)
 */
export function resolveRole(role: string, opts: RoleOptions = {}): RoleResolution {
  if (typeof role !== 'string' || role === '') throw new ArgTypeError('role must be a non-empty string');
  const config = deviceConfig(opts);
  const text = config[role];
  if (text === undefined) {
    return {
      skip:
        `no device plays role ${role}: set VFIO_BRIDGE_DEVICES (e.g. ${role}=8086:10d3), ` +
        'VFIO_BRIDGE_DEVICES_FILE or VFIO_BRIDGE_HIL_DEVICES',
    };
  }
  const selector = parseSelector(text, `role ${role}`);
  const root = sysfsRoot(opts);
  let all: PciDeviceEntry[];
  try {
    all = listDevices(opts);
  } catch (e) {
    return { skip: `role ${role} (${text}): cannot list PCI devices in ${root}: ${(e as Error).message}` };
  }
  if (selector.kind === 'bdf') {
    const entry = all.find((d) => d.bdf === selector.bdf);
    if (!entry) return { skip: `role ${role}: no PCI device ${selector.bdf} in ${root}` };
    return { bdf: entry.bdf, selector, entry };
  }
  const found = all.filter((d) => matches(selector, d));
  const index = selector.index ?? 0;
  if (found.length <= index) {
    const what =
      selector.kind === 'id'
        ? `${hex(selector.vendor, 4)}:${hex(selector.device, 4)}`
        : `class ${hex(selector.classCode >>> (8 * (3 - selector.bytes)), 2 * selector.bytes)}`;
    return {
      skip:
        found.length === 0
          ? `role ${role}: no PCI device is ${what} in ${root}`
          : `role ${role}: ${selector.text} asks for match #${index}, but only ${found.length} ` +
            `device(s) are ${what} (${found.map((d) => d.bdf).join(', ')})`,
    };
  }
  return { bdf: found[index].bdf, selector, entry: found[index] };
}
