/**
 * What vfio-bridge reads from sysfs: IOMMU group membership and bound drivers. The root is
 * overridable so that tests can run on a fake tree.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';

/** Where sysfs, and the VFIO device nodes, are looked up. */
export interface SysfsOptions {
  /**
   * The sysfs mount point. Default: the `VFIO_BRIDGE_SYSFS_ROOT` environment variable, else `/sys`.
   */
  sysfsRoot?: string;
}

/** The sysfs root in effect for `opts`. */
export function sysfsRoot(opts: SysfsOptions = {}): string {
  return opts.sysfsRoot ?? process.env['VFIO_BRIDGE_SYSFS_ROOT'] ?? '/sys';
}

/** The directory of every PCI device (`bus/pci/devices` under the sysfs root). */
export function pciDevicesDir(opts: SysfsOptions = {}): string {
  return path.join(sysfsRoot(opts), 'bus/pci/devices');
}

/**
 * The names in sysfs directory `dir`, unsorted. `what` names the listing in the error.
 * @throws VfioError with readdir's errno name as code (EIO when it has none), and `hint`
 */
export function listSysfsDir(dir: string, what: string, hint?: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new VfioError({
      message: `cannot list ${what}: ${err.message}`,
      code: err.code ?? 'EIO',
      ...(err.errno !== undefined ? { errno: -err.errno } : {}),
      op: 'readdir',
      path: dir,
      hint,
    });
  }
}

const BDF_FULL = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/;
const BDF_SHORT = /^([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/;

/**
 * Normalise a PCI address to `dddd:bb:dd.f` (lower case; a missing domain means 0000).
 * @throws TypeError if `bdf` is not a string, RangeError if it is not a PCI address
 */
export function normalizeBdf(bdf: string): string {
  if (typeof bdf !== 'string') throw new ArgTypeError(`a PCI address must be a string, got ${typeof bdf}`);
  const s = bdf.trim().toLowerCase();
  if (BDF_FULL.test(s)) return s;
  if (BDF_SHORT.test(s)) return `0000:${s}`;
  throw new ArgRangeError(`${JSON.stringify(bdf)} is not a PCI address (dddd:bb:dd.f)`);
}

function readlinkOrNull(p: string): string | null {
  try {
    return fs.readlinkSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * The IOMMU group number of a PCI device, from its `iommu_group` link.
 * @throws VfioError ENOENT when the device does not exist or has no IOMMU group
 */
export function groupNumberOf(bdf: string, opts: SysfsOptions = {}): number {
  const dev = normalizeBdf(bdf);
  const root = sysfsRoot(opts);
  const devDir = path.join(pciDevicesDir(opts), dev);
  const link = path.join(devDir, 'iommu_group');
  const target = readlinkOrNull(link);
  if (target === null) {
    const exists = fs.existsSync(devDir);
    throw new VfioError({
      message: exists ? `${dev} has no IOMMU group (${link} is missing)` : `no PCI device ${dev} in ${root}`,
      code: 'ENOENT',
      errno: 2,
      op: 'readlink',
      path: link,
      bdf: dev,
      hint: exists
        ? 'enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line) and check dmesg'
        : 'check the address with lspci -D',
    });
  }
  const n = Number(path.basename(target));
  if (!Number.isInteger(n) || n < 0) {
    throw new VfioError({
      message: `${link} points to ${target}, which is not an IOMMU group`,
      code: 'EPROTO',
      op: 'readlink',
      path: link,
      bdf: dev,
    });
  }
  return n;
}

/** A device of an IOMMU group and the driver it is bound to (null: none). */
export interface GroupMember {
  /** The member's name in the group's `devices` directory: a PCI address, `dddd:bb:dd.f`. */
  bdf: string;
  /** The driver it is bound to (`vfio-pci`, `e1000e`, ...), or null when it is bound to none. */
  driver: string | null;
}

/** The devices of IOMMU group `group`, sorted by address, with their drivers. */
export function groupMembers(group: number, opts: SysfsOptions = {}): GroupMember[] {
  const root = sysfsRoot(opts);
  const dir = path.join(root, 'kernel/iommu_groups', String(group), 'devices');
  return listSysfsDir(dir, `IOMMU group ${group}`)
    .sort()
    .map((bdf) => {
      const link = readlinkOrNull(path.join(dir, bdf, 'driver'));
      return { bdf, driver: link === null ? null : path.basename(link) };
    });
}

/**
 * Drivers that keep a group viable: vfio drivers, pci-stub, and pcieport (bridges are allowed by
 * the kernel). A device with no driver is fine too.
 */
export function driverKeepsViable(driver: string | null): boolean {
  return driver === null || driver.startsWith('vfio') || driver === 'pci-stub' || driver === 'pcieport';
}

/**
 * The explanation for a non-viable group: every member with its driver, the offenders marked,
 * and the commands that fix it.
 */
export function notViableHint(group: number, members: GroupMember[], opts: SysfsOptions = {}): string {
  const root = sysfsRoot(opts);
  const list = members
    .map((m) => `${m.bdf} (${m.driver ?? 'no driver'})${driverKeepsViable(m.driver) ? '' : ' <- blocks'}`)
    .join(', ');
  const offenders = members.filter((m) => !driverKeepsViable(m.driver));
  const fixes = offenders
    .map(
      (m) =>
        `echo ${m.bdf} > ${root}/bus/pci/devices/${m.bdf}/driver/unbind; ` +
        `echo vfio-pci > ${root}/bus/pci/devices/${m.bdf}/driver_override; ` +
        `echo ${m.bdf} > ${root}/bus/pci/drivers_probe`,
    )
    .join('; ');
  return (
    `every device in IOMMU group ${group} must be bound to vfio-pci or to no driver. ` +
    `Members: ${list || 'none found in sysfs'}.` +
    (fixes ? ` Bind each blocking device to vfio-pci, or unbind it: ${fixes}` : '')
  );
}
