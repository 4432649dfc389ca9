/**
 * The PCI devices as sysfs shows them: IDs, class, driver, driver_override, IOMMU group, network
 * interfaces and BAR resources. Everything the CLI decides before touching VFIO comes from here,
 * so it runs the same on a fake tree.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import {
  driverKeepsViable,
  groupMembers,
  listSysfsDir,
  normalizeBdf,
  pciDevicesDir,
  sysfsRoot,
  type GroupMember,
  type SysfsOptions,
} from '../vfio/sysfs';
import { fileError, UsageError } from './errors';

/** IFF_UP in a net device's `flags`. */
const IFF_UP = 0x1;

/** A network interface a PCI device drives. */
export interface NetInterface {
  name: string;
  up: boolean;
}

/** One line of a device's `resource` file: a BAR (0-5), the ROM (6) or a bridge window. */
export interface PciResource {
  index: number;
  start: number;
  end: number;
  flags: number;
  size: number;
}

/** IORESOURCE_IO in a `resource` line's flags. */
export const IORESOURCE_IO = 0x100;

/** What sysfs says about one PCI device. */
export interface PciDeviceEntry {
  bdf: string;
  vendor: number;
  device: number;
  /** 24-bit class code. */
  classCode: number;
  driver: string | null;
  /** driver_override, null when unset (or the kernel has none). */
  driverOverride: string | null;
  iommuGroup: number | null;
  net: NetInterface[];
}

function readTrim(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT' || err.code === 'ENODEV') return null;
    throw fileError(e, {
      lead: `cannot read ${p}`,
      op: 'read',
      path: p,
      hint: (code) =>
        code === 'EACCES' || code === 'EPERM'
          ? 'some sysfs attributes are readable by root only'
          : 'see dmesg for what the kernel said',
    });
  }
}

function readHex(p: string): number {
  const s = readTrim(p);
  return s === null ? 0 : parseInt(s, 16);
}

function linkBase(p: string): string | null {
  try {
    return path.basename(fs.readlinkSync(p));
  } catch {
    return null; // no link: no driver, no group
  }
}

/** The sysfs directory of a PCI device. */
export function deviceDir(bdf: string, opts: SysfsOptions = {}): string {
  return path.join(pciDevicesDir(opts), bdf);
}

/**
 * A PCI address from the command line, normalised.
 * @throws UsageError when it is not a PCI address
 */
export function parseBdf(arg: string): string {
  try {
    return normalizeBdf(arg);
  } catch {
    throw new UsageError(
      `${JSON.stringify(arg)} is not a PCI address`,
      'write it as dddd:bb:dd.f or bb:dd.f, as lspci -D shows it',
    );
  }
}

/**
 * What sysfs says about `bdf`.
 * @throws VfioError ENOENT when there is no such device
 */
export function readDevice(bdf: string, opts: SysfsOptions = {}): PciDeviceEntry {
  const dir = deviceDir(bdf, opts);
  if (!fs.existsSync(dir)) {
    throw new VfioError({
      message: `no PCI device ${bdf} in ${sysfsRoot(opts)}`,
      code: 'ENOENT',
      errno: 2,
      op: 'stat',
      path: dir,
      bdf,
      hint: 'list the devices with `vfio-bridge list` (or lspci -D)',
    });
  }
  const group = linkBase(path.join(dir, 'iommu_group'));
  const override = readTrim(path.join(dir, 'driver_override'));
  const net: NetInterface[] = [];
  let names: string[] = [];
  try {
    names = fs.readdirSync(path.join(dir, 'net')).sort();
  } catch {
    // not a network device
  }
  for (const name of names) {
    const flags = readHex(path.join(dir, 'net', name, 'flags'));
    net.push({ name, up: (flags & IFF_UP) !== 0 });
  }
  return {
    bdf,
    vendor: readHex(path.join(dir, 'vendor')),
    device: readHex(path.join(dir, 'device')),
    classCode: readHex(path.join(dir, 'class')),
    driver: linkBase(path.join(dir, 'driver')),
    driverOverride: override === null || override === '' || override === '(null)' ? null : override,
    iommuGroup: group === null ? null : Number(group),
    net,
  };
}

/** Every PCI device, sorted by address. */
export function listDevices(opts: SysfsOptions = {}): PciDeviceEntry[] {
  const dir = pciDevicesDir(opts);
  const names = listSysfsDir(dir, 'PCI devices', 'is sysfs mounted (or VFIO_BRIDGE_SYSFS_ROOT right)?');
  return names
    .filter((n) => /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(n))
    .sort()
    .map((n) => readDevice(n, opts));
}

/** The BAR and ROM resources from the `resource` file (indexes 0-6; unimplemented ones omitted). */
export function readResources(bdf: string, opts: SysfsOptions = {}): PciResource[] {
  const text = readTrim(path.join(deviceDir(bdf, opts), 'resource')) ?? '';
  const out: PciResource[] = [];
  text.split('\n').forEach((line, index) => {
    if (index > 6) return;
    const parts = line.trim().split(/\s+/);
    if (parts.length < 3) return;
    const [start, end, flags] = parts.map((p) => Number(BigInt(p)));
    if (start === 0 && end === 0) return;
    out.push({ index, start, end, flags, size: end - start + 1 });
  });
  return out;
}

/** The size of config space the kernel exposes (256 or 4096), from the size of the `config` file. */
export function configSize(bdf: string, opts: SysfsOptions = {}): number {
  try {
    return fs.statSync(path.join(deviceDir(bdf, opts), 'config')).size || 256;
  } catch {
    return 256;
  }
}

/** The reset methods the kernel offers (`reset_method`, Linux 5.15+), best first; [] when none. */
export function resetMethods(bdf: string, opts: SysfsOptions = {}): string[] {
  const s = readTrim(path.join(deviceDir(bdf, opts), 'reset_method'));
  return s ? s.split(/\s+/) : [];
}

/** Viability and VFIO readiness of a device's IOMMU group. */
export interface GroupState {
  /** Every member is on a driver that keeps the group usable through VFIO (or on none). */
  viable: boolean;
  /** On vfio-pci, in a viable group, with its /dev/vfio node present. */
  vfioReady: boolean;
  members: GroupMember[];
}

/** The state of `dev`'s group; no group means neither viable nor ready. */
export function groupState(dev: PciDeviceEntry, opts: SysfsOptions & { devDir?: string } = {}): GroupState {
  if (dev.iommuGroup === null) return { viable: false, vfioReady: false, members: [] };
  const members = groupMembers(dev.iommuGroup, opts);
  const viable = members.every((m) => driverKeepsViable(m.driver));
  const node = path.join(opts.devDir ?? '/dev/vfio', String(dev.iommuGroup));
  const vfioReady = viable && dev.driver !== null && dev.driver.startsWith('vfio') && fs.existsSync(node);
  return { viable, vfioReady, members };
}
