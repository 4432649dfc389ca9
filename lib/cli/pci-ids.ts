/**
 * Vendor, device and class names from the system's pci.ids (the file lspci reads), when there is
 * one. Names are decoration: without the file every name is null and nothing else changes.
 */
import * as fs from 'node:fs';

import { fileError } from './errors';

/** Where pci.ids lives on Debian/Ubuntu (pci.ids, pciutils), Fedora/Arch (hwdata), and elsewhere. */
export const PCI_IDS_PATHS = ['/usr/share/misc/pci.ids', '/usr/share/hwdata/pci.ids', '/usr/share/pci.ids'];

/** A parsed pci.ids. */
export class PciIds {
  readonly path: string | null;
  readonly #vendors = new Map<number, string>();
  readonly #devices = new Map<number, string>();
  readonly #classes = new Map<number, string>();

  private constructor(path: string | null, text: string) {
    this.path = path;
    let vendor = -1;
    let cls = -1;
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      if (line.startsWith('C ')) {
        const m = /^C ([0-9a-f]{2})\s+(.*)$/.exec(line);
        cls = m ? parseInt(m[1], 16) : -1;
        vendor = -1;
        if (m) this.#classes.set(cls << 8, m[2]);
        continue;
      }
      if (line[0] !== '\t') {
        const m = /^([0-9a-f]{4})\s+(.*)$/.exec(line);
        vendor = m ? parseInt(m[1], 16) : -1;
        cls = -1;
        if (m) this.#vendors.set(vendor, m[2]);
        continue;
      }
      if (line[1] === '\t') continue; // subsystems and programming interfaces: not shown
      const m = /^\t([0-9a-f]{2,4})\s+(.*)$/.exec(line);
      if (!m) continue;
      const id = parseInt(m[1], 16);
      if (vendor >= 0) this.#devices.set(vendor * 0x10000 + id, m[2]);
      else if (cls >= 0) this.#classes.set((cls << 8) | id, m[2]);
    }
  }

  /**
   * Load pci.ids: `path` if given (an error if unreadable), else `VFIO_BRIDGE_PCI_IDS`, else the
   * first of {@link PCI_IDS_PATHS} that exists, else an empty table.
   * @throws VfioError when the file named is not readable
   */
  static load(path?: string, env: NodeJS.ProcessEnv = process.env): PciIds {
    const explicit = path ?? env['VFIO_BRIDGE_PCI_IDS'];
    if (explicit) {
      const how = path !== undefined ? '--pci-ids' : 'VFIO_BRIDGE_PCI_IDS';
      let text: string;
      try {
        text = fs.readFileSync(explicit, 'utf8');
      } catch (e) {
        throw fileError(e, {
          lead: `cannot read the pci.ids file ${explicit} (from ${how})`,
          op: 'read',
          path: explicit,
          hint: (code) =>
            code === 'ENOENT'
              ? `there is no such file: name an existing pci.ids (e.g. ${PCI_IDS_PATHS[0]}), or leave ${how} out to use the system one`
              : `name a readable pci.ids file, or leave ${how} out to use the system one`,
        });
      }
      return new PciIds(explicit, text);
    }
    for (const p of PCI_IDS_PATHS) {
      let text: string;
      try {
        text = fs.readFileSync(p, 'utf8');
      } catch {
        continue; // not installed here: try the next place
      }
      return new PciIds(p, text);
    }
    return new PciIds(null, '');
  }

  vendor(vendor: number): string | null {
    return this.#vendors.get(vendor) ?? null;
  }

  device(vendor: number, device: number): string | null {
    return this.#devices.get(vendor * 0x10000 + device) ?? null;
  }

  /** The subclass name for a 24-bit class code, or the base class name. */
  className(classCode: number): string | null {
    const sub = (classCode >> 8) & 0xffff;
    return this.#classes.get(sub) ?? this.#classes.get(sub & 0xff00) ?? null;
  }
}
