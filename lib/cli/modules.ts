/**
 * The kernel modules that could drive a device, as `lspci -k` shows them: the device's modalias
 * (`pci:v00008086d0000100Esv...sd...bc02sc00i00`) matched against the `pci:` glob patterns of
 * modules.alias (`/lib/modules/$(uname -r)/modules.alias`, the file modprobe reads).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { SysfsOptions } from '../vfio/sysfs';
import { fileError } from './errors';
import { deviceDir, type PciDeviceEntry } from './pci-sysfs';

/** The modules.alias of the running kernel. */
export function defaultModulesAlias(): string {
  return path.join('/lib/modules', os.release(), 'modules.alias');
}

/** An fnmatch glob (`*`, `?`, `[...]`) as an anchored regular expression. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        const body = glob
          .slice(i + 1, end)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\');
        re += `[${body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

const hex8 = (v: number): string => v.toString(16).toUpperCase().padStart(8, '0');
const hex2 = (v: number): string => v.toString(16).toUpperCase().padStart(2, '0');

/** A device's modalias: the kernel's `modalias` file, else built from its IDs the same way. */
export function modaliasOf(dev: PciDeviceEntry, opts: SysfsOptions = {}): string {
  const dir = deviceDir(dev.bdf, opts);
  try {
    return fs.readFileSync(path.join(dir, 'modalias'), 'utf8').trim();
  } catch {
    // An older or fake tree without it: build it as drivers/pci/pci-driver.c does.
  }
  const id = (name: string): number => {
    try {
      return parseInt(fs.readFileSync(path.join(dir, name), 'utf8').trim(), 16) || 0;
    } catch {
      return 0;
    }
  };
  const c = dev.classCode;
  return (
    `pci:v${hex8(dev.vendor)}d${hex8(dev.device)}sv${hex8(id('subsystem_vendor'))}` +
    `sd${hex8(id('subsystem_device'))}bc${hex2(c >> 16)}sc${hex2((c >> 8) & 0xff)}i${hex2(c & 0xff)}`
  );
}

/** The `pci:` aliases of modules.alias, indexed by the vendor their pattern names. */
export class ModuleAliases {
  readonly path: string | null;
  /** Patterns with a literal vendor, by that vendor's 8 hex digits; the others under ''. */
  readonly #byVendor = new Map<string, { re: RegExp; module: string }[]>();

  private constructor(p: string | null, text: string) {
    this.path = p;
    for (const line of text.split('\n')) {
      const m = /^alias (pci:\S+) (\S+)$/.exec(line.trim());
      if (!m) continue;
      const v = /^pci:v([0-9A-F]{8})/.exec(m[1]);
      const key = v ? v[1] : '';
      const list = this.#byVendor.get(key) ?? [];
      list.push({ re: globToRegExp(m[1]), module: m[2] });
      this.#byVendor.set(key, list);
    }
  }

  /**
   * Load modules.alias: `explicit` (an error if unreadable), else the running kernel's; null when
   * that one is missing (a container, a kernel without modules), so list shows no modules.
   */
  static load(explicit?: string): ModuleAliases | null {
    const p = explicit ?? defaultModulesAlias();
    try {
      return new ModuleAliases(p, fs.readFileSync(p, 'utf8'));
    } catch (e) {
      if (explicit === undefined) return null;
      throw fileError(e, {
        lead: `cannot read the modules.alias file ${p} (from VFIO_BRIDGE_MODULES_ALIAS)`,
        op: 'read',
        path: p,
        hint: () =>
          `name a readable modules.alias, or unset VFIO_BRIDGE_MODULES_ALIAS to use ${defaultModulesAlias()}`,
      });
    }
  }

  /** The modules whose aliases match `modalias`, each once: those naming its vendor first. */
  match(modalias: string): string[] {
    const v = /^pci:v([0-9A-F]{8})/.exec(modalias)?.[1] ?? '';
    const out: string[] = [];
    for (const key of [v, '']) {
      for (const a of this.#byVendor.get(key) ?? []) {
        if (!out.includes(a.module) && a.re.test(modalias)) out.push(a.module);
      }
    }
    return out;
  }
}
