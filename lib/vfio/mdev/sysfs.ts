/**
 * Mediated devices as sysfs shows them: the parents (`/sys/class/mdev_bus/*`), the types each
 * offers (`mdev_supported_types/<type>/`: name, description, device_api, available_instances,
 * create, devices/), and the instances (`/sys/bus/mdev/devices/<uuid>`: mdev_type, iommu_group,
 * remove, vfio-dev/ when the kernel has VFIO device cdevs). Reading only; create.ts and remove.ts
 * write. The root is overridable (SysfsOptions) so tests run on fake trees.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ArgRangeError, ArgTypeError } from '../../base/error';
import { VfioError } from '../../base/native-errors';
import { sysfsRoot, type SysfsOptions } from '../sysfs';

/** One type a parent can create, as its `mdev_supported_types/<id>/` directory says. */
export interface MdevType {
  /** The parent device's name (its entry in /sys/class/mdev_bus). */
  readonly parent: string;
  /** The type's directory name, which `create` is written under (e.g. `mtty-1`). */
  readonly id: string;
  /** The `name` attribute (a human-readable name), or null when the driver gives none. */
  readonly name: string | null;
  /** The `description` attribute, or null when the driver offers none. */
  readonly description: string | null;
  /** The VFIO device API the instances present (`vfio-pci`, `vfio-ccw`, ...). */
  readonly deviceApi: string;
  /** How many more instances of this type can be created now. */
  readonly availableInstances: number;
  /** The UUIDs of the instances of this type that exist now. */
  readonly devices: readonly string[];
}

/** An mdev parent device and its types. */
export interface MdevParent {
  /** Its name in /sys/class/mdev_bus (e.g. `mtty`, or a PCI address for a physical parent). */
  readonly name: string;
  /** Its sysfs device directory. */
  readonly path: string;
  /** The mdev types it offers (its `mdev_supported_types` directory); empty when it offers none. */
  readonly types: readonly MdevType[];
}

/** One mediated device instance. */
export interface MdevDevice {
  /** Its UUID: its name on the mdev bus, and the name VFIO_GROUP_GET_DEVICE_FD takes. */
  readonly uuid: string;
  /** Its sysfs directory. */
  readonly path: string;
  /** The parent's name (its entry in /sys/class/mdev_bus). */
  readonly parent: string;
  /** The type's directory name (e.g. `mtty-1`). */
  readonly type: string;
  /** Its IOMMU group (the group VFIO opens it through), or null while it has none. */
  readonly iommuGroup: number | null;
  /** Its VFIO device cdev (`/dev/vfio/devices/vfioN`), or null when the kernel has no cdevs. */
  readonly cdev: string | null;
  /** The mdev driver bound to it (e.g. `mtty`), or null. */
  readonly driver: string | null;
  /**
   * True while a removal is under way: the kernel took `remove` away and waits for the device's
   * VFIO fds to be closed before the device goes.
   */
  readonly removing: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** True when `s` is a UUID as the mdev bus names devices (lower-case 8-4-4-4-12 hex). */
export function isMdevUuid(s: string): boolean {
  return typeof s === 'string' && UUID.test(s.trim().toLowerCase());
}

/**
 * normalizeMdevUuid: a UUID in the mdev bus's spelling (lower case, no spaces).
 * @throws RangeError when `uuid` is not a UUID
 */
export function normalizeMdevUuid(uuid: string): string {
  if (typeof uuid !== 'string') throw new ArgTypeError(`an mdev UUID must be a string, got ${typeof uuid}`);
  const s = uuid.trim().toLowerCase();
  if (!UUID.test(s)) {
    throw new ArgRangeError(
      `${JSON.stringify(uuid)} is not a UUID (8-4-4-4-12 hex digits, e.g. 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001)`,
    );
  }
  return s;
}

/** The /sys/class/mdev_bus directory. */
export function mdevBusClass(opts: SysfsOptions = {}): string {
  return path.join(sysfsRoot(opts), 'class/mdev_bus');
}

/** The directory of mdev instance `uuid` on the mdev bus (a link into the parent's directory). */
export function mdevDevicePath(uuid: string, opts: SysfsOptions = {}): string {
  return path.join(sysfsRoot(opts), 'bus/mdev/devices', uuid);
}

function readAttr(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw sysfsError(e, 'read', p);
  }
}

function readDir(p: string): string[] {
  try {
    return fs.readdirSync(p).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw sysfsError(e, 'readdir', p);
  }
}

function linkName(p: string): string | null {
  try {
    return path.basename(fs.readlinkSync(p));
  } catch {
    return null; // no such link: the attribute is absent
  }
}

/** A sysfs read that failed for a reason other than absence, as a VfioError with Node's code. */
export function sysfsError(e: unknown, op: string, p: string): VfioError {
  const err = e as NodeJS.ErrnoException;
  return new VfioError({
    message: `cannot ${op} ${p}: ${err.message}`,
    code: err.code ?? 'EIO',
    ...(err.errno !== undefined ? { errno: -err.errno } : {}),
    op,
    path: p,
    cause: e,
    ...(err.code === 'EACCES' || err.code === 'EPERM'
      ? { hint: 'creating and removing mediated devices needs root (or write access to these sysfs files)' }
      : {}),
  });
}

/** The names of the mdev parents, sorted; empty when no driver registered one. */
export function mdevParentNames(opts: SysfsOptions = {}): string[] {
  return readDir(mdevBusClass(opts));
}

/** The sysfs directory of parent `name`, or null when there is no such parent. */
function parentDir(name: string, opts: SysfsOptions): string | null {
  const link = path.join(mdevBusClass(opts), name);
  try {
    return fs.realpathSync(link);
  } catch {
    return null;
  }
}

/** Reads one type directory of `parent`. */
function readType(parent: string, typesDir: string, id: string): MdevType {
  const dir = path.join(typesDir, id);
  const avail = readAttr(path.join(dir, 'available_instances'));
  const n = avail === null ? NaN : Number(avail);
  if (!Number.isInteger(n) || n < 0) {
    throw new VfioError({
      message: `${path.join(dir, 'available_instances')} reads ${JSON.stringify(avail)}, not a count`,
      code: 'EPROTO',
      op: 'read',
      path: path.join(dir, 'available_instances'),
    });
  }
  return {
    parent,
    id,
    name: readAttr(path.join(dir, 'name')),
    description: readAttr(path.join(dir, 'description')),
    deviceApi: readAttr(path.join(dir, 'device_api')) ?? 'unknown',
    availableInstances: n,
    devices: readDir(path.join(dir, 'devices')),
  };
}

/**
 * mdevParent: parent `name` with its types.
 * @throws VfioError ENOENT naming the parents there are (or saying there are none, and why)
 */
export function mdevParent(name: string, opts: SysfsOptions = {}): MdevParent {
  if (typeof name !== 'string') throw new ArgTypeError(`an mdev parent must be a string, got ${typeof name}`);
  const dir = parentDir(name, opts);
  if (dir === null) throw unknownParent(name, opts);
  const typesDir = path.join(dir, 'mdev_supported_types');
  return { name, path: dir, types: readDir(typesDir).map((id) => readType(name, typesDir, id)) };
}

/** Every mdev parent with its types. */
export function listMdevParents(opts: SysfsOptions = {}): MdevParent[] {
  return mdevParentNames(opts).map((n) => mdevParent(n, opts));
}

function unknownParent(name: string, opts: SysfsOptions): VfioError {
  const names = mdevParentNames(opts);
  return new VfioError({
    message: `no mdev parent ${JSON.stringify(name)} in ${mdevBusClass(opts)}`,
    code: 'ENOENT',
    op: 'readlink',
    path: path.join(mdevBusClass(opts), name),
    hint:
      names.length > 0
        ? `the parents here: ${names.join(', ')} (vfio-bridge mdev list)`
        : 'no driver has registered an mdev parent: load the driver that offers one (the kernel sample ' +
          'is mtty: modprobe mtty, with CONFIG_SAMPLE_VFIO_MDEV_MTTY) and check that the mdev module is loaded',
  });
}

/**
 * mdevType: type `type` of `parent`: its directory name (`mtty-1`), or the part after the
 * driver's prefix (`1`) when that names one type only.
 * @throws VfioError ENOENT naming the parent's types
 */
export function mdevType(parent: string, type: string, opts: SysfsOptions = {}): MdevType {
  if (typeof type !== 'string') throw new ArgTypeError(`an mdev type must be a string, got ${typeof type}`);
  const p = mdevParent(parent, opts);
  const exact = p.types.find((t) => t.id === type);
  if (exact) return exact;
  const suffixed = p.types.filter((t) => t.id.endsWith(`-${type}`));
  if (suffixed.length === 1) return suffixed[0]!;
  throw new VfioError({
    message: `mdev parent ${parent} has no type ${JSON.stringify(type)}`,
    code: 'ENOENT',
    op: 'readdir',
    path: path.join(p.path, 'mdev_supported_types', type),
    hint:
      p.types.length > 0
        ? `its types: ${p.types.map((t) => `${t.id}${t.name ? ` (${t.name})` : ''}`).join(', ')} (vfio-bridge mdev types ${parent})`
        : `${parent} offers no types`,
  });
}

/**
 * findMdev: instance `uuid`, or null when it does not exist.
 * @throws RangeError when `uuid` is not a UUID
 */
export function findMdev(uuid: string, opts: SysfsOptions = {}): MdevDevice | null {
  const id = normalizeMdevUuid(uuid);
  const link = mdevDevicePath(id, opts);
  let dir: string;
  let onBus = true;
  try {
    dir = fs.realpathSync(link);
  } catch {
    // A removal takes the device off the bus first and keeps its directory under the parent until
    // the kernel has finished (it waits there for the device's VFIO fds to close).
    const under = underParent(id, opts);
    if (under === null) return null;
    dir = under;
    onBus = false;
  }
  // An instance is a child of its parent's device; the parent is named as mdev_bus names it.
  const parentPath = path.dirname(dir);
  const parent =
    mdevParentNames(opts).find((n) => parentDir(n, opts) === parentPath) ?? path.basename(parentPath);
  // mdev_type goes first when the device is removed: the type is then unknown.
  const type = linkName(path.join(dir, 'mdev_type')) ?? '';
  const group = linkName(path.join(dir, 'iommu_group'));
  const cdevs = readDir(path.join(dir, 'vfio-dev')).filter((n) => /^vfio\d+$/.test(n));
  return {
    uuid: id,
    path: dir,
    parent,
    type,
    iommuGroup: group !== null && /^\d+$/.test(group) ? Number(group) : null,
    cdev: cdevs.length > 0 ? `/dev/vfio/devices/${cdevs[0]}` : null,
    driver: linkName(path.join(dir, 'driver')),
    removing: !onBus || !fs.existsSync(path.join(dir, 'remove')),
  };
}

/** The directory of instance `uuid` under whichever parent holds it, or null. */
function underParent(uuid: string, opts: SysfsOptions): string | null {
  for (const name of mdevParentNames(opts)) {
    const p = parentDir(name, opts);
    if (p !== null && fs.existsSync(path.join(p, uuid))) return path.join(p, uuid);
  }
  return null;
}

/**
 * mdevDevice: instance `uuid`.
 * @throws VfioError ENOENT naming the instances there are
 */
export function mdevDevice(uuid: string, opts: SysfsOptions = {}): MdevDevice {
  const d = findMdev(uuid, opts);
  if (d !== null) return d;
  const all = listMdevs(opts).map((m) => `${m.uuid} (${m.type})`);
  throw new VfioError({
    message: `no mediated device ${normalizeMdevUuid(uuid)}`,
    code: 'ENOENT',
    op: 'realpath',
    path: mdevDevicePath(normalizeMdevUuid(uuid), opts),
    hint:
      all.length > 0
        ? `the mediated devices here: ${all.join(', ')}`
        : 'there are none: create one with vfio-bridge mdev create PARENT TYPE',
  });
}

/** Every mdev instance, sorted by UUID. */
export function listMdevs(opts: SysfsOptions = {}): MdevDevice[] {
  const names = new Set(readDir(path.join(sysfsRoot(opts), 'bus/mdev/devices')).filter(isMdevUuid));
  // Instances being removed are no longer on the bus, but still under their parent.
  for (const p of mdevParentNames(opts)) {
    const dir = parentDir(p, opts);
    if (dir !== null) for (const n of readDir(dir)) if (isMdevUuid(n)) names.add(n);
  }
  return [...names].sort().flatMap((u) => {
    const d = findMdev(u, opts);
    return d === null ? [] : [d];
  });
}

/**
 * The IOMMU group of mdev `uuid`: the group VFIO opens it through.
 * @throws VfioError ENOENT when there is no such device or it has no group (no VFIO driver bound)
 */
export function mdevGroupNumber(uuid: string, opts: SysfsOptions = {}): number {
  const d = mdevDevice(uuid, opts);
  if (d.iommuGroup !== null) return d.iommuGroup;
  throw new VfioError({
    message: `mediated device ${d.uuid} has no IOMMU group`,
    code: 'ENOENT',
    op: 'readlink',
    path: path.join(d.path, 'iommu_group'),
    hint: d.removing
      ? 'it is being removed'
      : `its driver (${d.driver ?? 'none bound'}) registered no VFIO device for it; check dmesg`,
  });
}
