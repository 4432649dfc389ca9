/**
 * Moving devices between drivers the way driverctl does: through `driver_override`, which names
 * one device, never `new_id`, which would grab every device with the same IDs. Every check (device,
 * driver, group viability, the host's use of the device) is made for all devices before any is
 * touched, and the state file records a device only once the kernel has taken the first write.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import { fileError } from './errors';
import { driverKeepsViable, groupMembers, sysfsRoot, type SysfsOptions } from '../vfio/sysfs';
import { giveBackGroup, handGroupsTo, type VfioUser } from './group-owner';
import { checkNotInHostUse, type HostUseOptions } from './host-use';
import { deviceDir, readDevice, type PciDeviceEntry } from './pci-sysfs';
import type { DriverState } from './state';

/** One device's move. */
export interface DriverChange {
  bdf: string;
  from: string | null;
  to: string | null;
  /** False when the device already was where it was asked to go. */
  changed: boolean;
}

/** Shared by bind, unbind and restore. */
export interface MoveOptions extends HostUseOptions {
  /** Directory of the VFIO group nodes (default `/dev/vfio`). */
  vfioDevDir?: string;
  state: DriverState;
  /** How long to wait for the kernel to bind or release a device. */
  timeoutMs: number;
  /** Take a device the host is using (see host-use.ts). */
  force?: boolean;
  /** Called before each device is moved (i from 1). */
  onStart?(i: number, n: number, bdf: string): void;
  /** Called after each device is moved. */
  onDone?(i: number, n: number, change: DriverChange): void;
}

export interface BindOptions extends MoveOptions {
  driver: string;
  /** Bind every device of each group, not only those named. */
  group: boolean;
  /** Hand each bound device's group node (/dev/vfio/N) to this user. */
  user?: VfioUser;
}

const POLL_MS = 10;
/** How long restore lets drivers_probe work before naming the driver itself. */
const RESTORE_PROBE_MS = 1000;

function isVfioDriver(driver: string): boolean {
  return driver.startsWith('vfio');
}

function sysfsWrite(file: string, value: string, bdf: string): void {
  try {
    fs.writeFileSync(file, value);
  } catch (e) {
    throw sysfsError(e, file, value, bdf);
  }
}

function sysfsError(e: unknown, file: string, value: string, bdf: string): VfioError {
  return fileError(e, {
    lead: `writing ${JSON.stringify(value.trim())} to ${file} failed`,
    op: 'write',
    path: file,
    bdf,
    hint: (code) =>
      code === 'EACCES' || code === 'EPERM'
        ? 'changing drivers needs root'
        : 'see dmesg for what the kernel said',
  });
}

/**
 * The first write to `bdf`'s sysfs files, with what it had before remembered in the same step
 * (DriverState.rememberAround). A user who may not write `file` is told so by it first, before
 * the state file's lock is needed.
 */
function firstWrite(bdf: string, file: string, value: string, opts: MoveOptions, write: () => void): void {
  try {
    fs.accessSync(file, fs.constants.W_OK);
  } catch (e) {
    // Anything but a refusal (a racing unbind that removed `driver/`) is the write's to report.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') throw sysfsError(e, file, value, bdf);
  }
  opts.state.rememberAround(
    bdf,
    () => {
      const now = readDevice(bdf, opts);
      return { driver: now.driver, driverOverride: now.driverOverride };
    },
    write,
  );
}

/**
 * Detach `bdf` from its driver. A racing command that detached it first makes the kernel answer
 * ENODEV (or the `driver` link is gone: ENOENT); the device is then where it was asked to go.
 */
function writeUnbind(bdf: string, opts: SysfsOptions): void {
  try {
    fs.writeFileSync(path.join(deviceDir(bdf, opts), 'driver/unbind'), bdf);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if ((code === 'ENOENT' || code === 'ENODEV') && currentDriver(bdf, opts) === null) return;
    sysfsWrite(path.join(deviceDir(bdf, opts), 'driver/unbind'), bdf, bdf);
  }
}

/** Refuse a device the host uses, unless forced; a device on no driver or on vfio is not the host's. */
function checkHostUse(dev: PciDeviceEntry, verb: string, opts: MoveOptions): void {
  if (opts.force || dev.driver === null || isVfioDriver(dev.driver)) return;
  checkNotInHostUse(dev.bdf, verb, opts);
}

function currentDriver(bdf: string, opts: SysfsOptions): string | null {
  try {
    return path.basename(fs.readlinkSync(path.join(deviceDir(bdf, opts), 'driver')));
  } catch {
    return null; // no driver link: unbound
  }
}

async function waitForDriver(
  bdf: string,
  want: string | null,
  opts: MoveOptions,
  what: string,
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const now = currentDriver(bdf, opts);
    if (now === want) return;
    if (Date.now() >= deadline) {
      throw new VfioError({
        message: `${bdf} did not ${what} within ${opts.timeoutMs} ms (driver now: ${now ?? 'none'})`,
        code: 'ETIMEDOUT',
        op: 'wait',
        path: path.join(deviceDir(bdf, opts), 'driver'),
        bdf,
        hint: 'see dmesg for why the driver refused the device; --timeout MS waits longer',
      });
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function checkDriverLoaded(driver: string, opts: SysfsOptions): void {
  const dir = path.join(sysfsRoot(opts), 'bus/pci/drivers', driver);
  if (!fs.existsSync(dir)) {
    throw new VfioError({
      message: `there is no PCI driver ${driver} (${dir} is missing)`,
      code: 'ENOENT',
      errno: 2,
      op: 'stat',
      path: dir,
      hint: `load it first: modprobe ${driver}`,
    });
  }
}

/** PIDs (with their command names) holding `node` open, read from /proc; empty when unreadable. */
function holdersOf(node: string): string[] {
  const out: string[] = [];
  let pids: string[] = [];
  try {
    pids = fs.readdirSync('/proc').filter((p) => /^[0-9]+$/.test(p));
  } catch {
    return out;
  }
  for (const pid of pids) {
    try {
      const fds = fs.readdirSync(`/proc/${pid}/fd`);
      if (!fds.some((fd) => fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === node)) continue;
      out.push(`${pid} (${fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()})`);
    } catch {
      // gone, or not ours to look at
    }
  }
  return out;
}

/**
 * Refuse to take a device away from vfio while a process has its group open (a VMM using it): the
 * kernel's unbind then blocks, uninterruptibly and without a timeout, until that process lets go.
 * The group node answers a second open with EBUSY while it is held (legacy group or cdev).
 */
function checkVfioReleased(dev: PciDeviceEntry, opts: MoveOptions): void {
  if (dev.driver === null || !isVfioDriver(dev.driver) || dev.iommuGroup === null) return;
  const node = path.join(opts.vfioDevDir ?? '/dev/vfio', String(dev.iommuGroup));
  let fd: number;
  try {
    fd = fs.openSync(node, fs.constants.O_RDWR);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EBUSY') return; // no node, no access: nothing to tell
    const holders = holdersOf(node);
    throw new VfioError({
      message:
        `${dev.bdf} is in use through ${node}` +
        (holders.length > 0 ? ` by ${holders.join(', ')}` : ' by another process'),
      code: 'EBUSY',
      errno: 16,
      op: 'open',
      path: node,
      bdf: dev.bdf,
      hint:
        `stop that process or have it close the device first: ${dev.driver} would not let go of ` +
        'the device until it does, and the unbind would hang',
    });
  }
  fs.closeSync(fd);
}

/**
 * The devices `bind` would move, checked: the named ones, plus their groups' other members with
 * `group`, refusing a group vfio would find not viable afterwards.
 */
export function planBind(bdfs: readonly string[], opts: BindOptions): PciDeviceEntry[] {
  // A device that does not exist is named as such before anything is said about drivers.
  const named = bdfs.map((b) => readDevice(b, opts));
  checkDriverLoaded(opts.driver, opts);
  const plan = new Map<string, PciDeviceEntry>(named.map((d) => [d.bdf, d]));
  if (isVfioDriver(opts.driver)) {
    for (const dev of named) {
      if (dev.iommuGroup === null) {
        throw new VfioError({
          message: `${dev.bdf} has no IOMMU group, so VFIO cannot use it`,
          code: 'ENOENT',
          op: 'bind',
          bdf: dev.bdf,
          hint: 'enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line) and check dmesg',
        });
      }
      const members = groupMembers(dev.iommuGroup, opts);
      const others = members.filter((m) => !plan.has(m.bdf) && m.driver !== opts.driver);
      if (opts.group) {
        for (const m of others) if (m.driver !== 'pcieport') plan.set(m.bdf, readDevice(m.bdf, opts));
        continue;
      }
      const blocking = others.filter((m) => !driverKeepsViable(m.driver));
      if (blocking.length === 0) continue;
      const list = members.map((m) => `${m.bdf} (${m.driver ?? 'no driver'})`).join(', ');
      throw new VfioError({
        message:
          `binding ${dev.bdf} to ${opts.driver} would leave IOMMU group ${dev.iommuGroup} not viable: ` +
          `${blocking.map((m) => `${m.bdf} is on ${m.driver}`).join(', ')}`,
        code: 'ENOTVIABLE',
        op: 'bind',
        bdf: dev.bdf,
        hint:
          `every device of the group must be on vfio-pci or on no driver (members: ${list}). ` +
          `Pass --group to bind the whole group, or bind ${blocking.map((m) => m.bdf).join(' ')} as well`,
      });
    }
  }
  const devices = [...plan.values()];
  for (const dev of devices) if (dev.driver !== opts.driver) checkHostUse(dev, 'bind', opts);
  for (const dev of devices) if (dev.driver !== opts.driver) checkVfioReleased(dev, opts);
  return devices;
}

/** bind: move devices to `opts.driver` through driver_override, remembering where each came from. */
export async function bindDevices(bdfs: readonly string[], opts: BindOptions): Promise<DriverChange[]> {
  const devices = planBind(bdfs, opts);
  const out: DriverChange[] = [];
  for (const [i, dev] of devices.entries()) {
    opts.onStart?.(i + 1, devices.length, dev.bdf);
    const change: DriverChange = { bdf: dev.bdf, from: dev.driver, to: opts.driver, changed: false };
    if (dev.driver !== opts.driver) {
      const override = path.join(deviceDir(dev.bdf, opts), 'driver_override');
      // Once the kernel took the override there is something for restore to undo.
      firstWrite(dev.bdf, override, opts.driver, opts, () => sysfsWrite(override, opts.driver, dev.bdf));
      if (dev.driver !== null) writeUnbind(dev.bdf, opts);
      sysfsWrite(path.join(sysfsRoot(opts), 'bus/pci/drivers_probe'), dev.bdf, dev.bdf);
      await waitForDriver(dev.bdf, opts.driver, opts, `bind to ${opts.driver}`);
      change.changed = true;
    }
    out.push(change);
    opts.onDone?.(i + 1, devices.length, change);
  }
  if (opts.user !== undefined) {
    const groups = devices.map((d) => d.iommuGroup).filter((g): g is number => g !== null);
    await handGroupsTo(groups, opts.user, opts.state, { ...opts });
  }
  return out;
}

/** unbind: detach devices from their drivers (driver_override is left as it is). */
export async function unbindDevices(bdfs: readonly string[], opts: MoveOptions): Promise<DriverChange[]> {
  const devices = bdfs.map((b) => readDevice(b, opts));
  for (const dev of devices) checkHostUse(dev, 'unbind', opts);
  for (const dev of devices) checkVfioReleased(dev, opts);
  const out: DriverChange[] = [];
  for (const [i, dev] of devices.entries()) {
    opts.onStart?.(i + 1, devices.length, dev.bdf);
    const change: DriverChange = { bdf: dev.bdf, from: dev.driver, to: null, changed: false };
    if (dev.driver !== null) {
      giveBackGroup(dev.iommuGroup, opts.state, opts.vfioDevDir);
      const unbind = path.join(deviceDir(dev.bdf, opts), 'driver/unbind');
      firstWrite(dev.bdf, unbind, dev.bdf, opts, () => writeUnbind(dev.bdf, opts));
      await waitForDriver(dev.bdf, null, opts, `leave ${dev.driver}`);
      change.changed = true;
    }
    out.push(change);
    opts.onDone?.(i + 1, devices.length, change);
  }
  return out;
}

/** restore: put devices back on the driver (and driver_override) the state file remembers. */
export async function restoreDevices(bdfs: readonly string[], opts: MoveOptions): Promise<DriverChange[]> {
  const devices = bdfs.map((b) => readDevice(b, opts));
  for (const dev of devices) {
    // A device that was on vfio-pci already when its group was handed over has only that to undo.
    const ownerOnly = dev.iommuGroup !== null && opts.state.owner(dev.iommuGroup) !== undefined;
    if (opts.state.get(dev.bdf) === undefined && !ownerOnly) {
      throw new VfioError({
        message: `${opts.state.path} remembers no earlier driver for ${dev.bdf}`,
        code: 'ENOENT',
        op: 'restore',
        path: opts.state.path,
        bdf: dev.bdf,
        hint: 'restore undoes what bind or unbind did; to choose a driver, use bind --driver NAME',
      });
    }
    const saved = opts.state.get(dev.bdf);
    if (saved !== undefined && dev.driver !== saved.driver) checkVfioReleased(dev, opts);
  }
  const out: DriverChange[] = [];
  for (const [i, dev] of devices.entries()) {
    opts.onStart?.(i + 1, devices.length, dev.bdf);
    giveBackGroup(dev.iommuGroup, opts.state, opts.vfioDevDir);
    const saved = opts.state.get(dev.bdf);
    if (saved === undefined) {
      const change: DriverChange = { bdf: dev.bdf, from: dev.driver, to: dev.driver, changed: false };
      out.push(change);
      opts.onDone?.(i + 1, devices.length, change);
      continue;
    }
    const dir = deviceDir(dev.bdf, opts);
    // An empty write clears driver_override; the kernel then matches by ID table again.
    sysfsWrite(path.join(dir, 'driver_override'), saved.driverOverride ?? '\n', dev.bdf);
    if (dev.driver !== null && dev.driver !== saved.driver) {
      writeUnbind(dev.bdf, opts);
      await waitForDriver(dev.bdf, null, opts, `leave ${dev.driver}`);
    }
    if (saved.driver !== null && currentDriver(dev.bdf, opts) !== saved.driver) {
      sysfsWrite(path.join(sysfsRoot(opts), 'bus/pci/drivers_probe'), dev.bdf, dev.bdf);
      const grace = { ...opts, timeoutMs: Math.min(opts.timeoutMs, RESTORE_PROBE_MS) };
      try {
        await waitForDriver(dev.bdf, saved.driver, grace, `return to ${saved.driver}`);
      } catch {
        // No driver took it (or the ID match chose none): ask the remembered one by name.
        const bind = path.join(sysfsRoot(opts), 'bus/pci/drivers', saved.driver, 'bind');
        if (currentDriver(dev.bdf, opts) === null && fs.existsSync(bind)) sysfsWrite(bind, dev.bdf, dev.bdf);
      }
    }
    await waitForDriver(dev.bdf, saved.driver, opts, `return to ${saved.driver ?? 'no driver'}`);
    opts.state.forget(dev.bdf);
    const change: DriverChange = {
      bdf: dev.bdf,
      from: dev.driver,
      to: saved.driver,
      changed: dev.driver !== saved.driver,
    };
    out.push(change);
    opts.onDone?.(i + 1, devices.length, change);
  }
  return out;
}
