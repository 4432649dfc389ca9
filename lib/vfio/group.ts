import { ArgRangeError, ArgTypeError, closedError } from '../base/error';
import * as path from 'node:path';

import { native, type NativeHandle } from '../native';
import { containerHandle, type Container } from './container';
import { Device } from './device';
import { addOpenGroup, findOpenGroup, openDeviceOwner, removeOpenGroup } from './open-objects';
import { VfioError } from '../base/native-errors';
import {
  groupMembers,
  groupNumberOf,
  normalizeBdf,
  notViableHint,
  type GroupMember,
  type SysfsOptions,
} from './sysfs';
import { VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE } from './uapi';
import { isMdevUuid, mdevGroupNumber, normalizeMdevUuid } from './mdev/sysfs';

/**
 * A device's name as VFIO_GROUP_GET_DEVICE_FD takes it: a PCI address (`dddd:bb:dd.f`), or a
 * mediated device's UUID, each in the kernel's spelling.
 * @throws RangeError when `name` is neither
 */
export function normalizeDeviceName(name: string): string {
  if (typeof name === 'string' && isMdevUuid(name)) return normalizeMdevUuid(name);
  return normalizeBdf(name);
}

/** The IOMMU group of a PCI device or of a mediated device (by UUID). */
function deviceGroupNumber(name: string, opts: SysfsOptions): number {
  return isMdevUuid(name) ? mdevGroupNumber(name, opts) : groupNumberOf(name, opts);
}

/** Where a group is looked up. */
export interface GroupOptions extends SysfsOptions {
  /** Directory of the group nodes (default `/dev/vfio`). */
  devDir?: string;
}

/** VFIO_GROUP_GET_STATUS, decoded. */
export interface GroupStatus {
  /** Every device in the group is bound to vfio-pci (or a driver VFIO allows) or to none. */
  viable: boolean;
  /** The group is attached to a container. */
  containerSet: boolean;
}

/** The open Group object for IOMMU group `n` in this environment, if any. */
export function openGroup(n: number): Group | undefined {
  const g = findOpenGroup(n);
  return g instanceof Group ? g : undefined;
}

/** Devices an openDeviceAsync is opening now: they count as open already. */
const opening = new Set<string>();

/**
 * A VFIO group (`/dev/vfio/N`): the unit the IOMMU isolates. Put it in a {@link Container}, then
 * open its devices. Only one Group per IOMMU group is open in a process at a time.
 */
export class Group implements Disposable {
  /** The IOMMU group number. */
  readonly number: number;
  /** The group node, e.g. `/dev/vfio/12`. */
  readonly path: string;
  readonly #handle: NativeHandle;
  readonly #sysfs: SysfsOptions;
  #container: Container | null = null;
  #closed = false;

  private constructor(n: number, p: string, h: NativeHandle, sysfs: SysfsOptions) {
    this.number = n;
    this.path = p;
    this.#handle = h;
    this.#sysfs = sysfs;
    addOpenGroup(this);
  }

  /** The group fd (-1 once closed), e.g. for VFIO_DEVICE_PCI_HOT_RESET. */
  get fd(): number {
    return native.fdOf(this.#handle);
  }

  /**
   * Open IOMMU group `group`.
   * @throws VfioError: EACCES/EPERM (permissions), EBUSY (open elsewhere), ENOENT (not bound to vfio-pci)
   */
  static open(group: number, opts: GroupOptions = {}): Group {
    if (typeof group !== 'number')
      throw new ArgTypeError(`Group.open: group must be a number, got ${typeof group}`);
    if (!Number.isInteger(group) || group < 0 || group > 0xffff_ffff) {
      throw new ArgRangeError(`Group.open: ${group} is not an IOMMU group number`);
    }
    const p = path.join(opts.devDir ?? '/dev/vfio', String(group));
    const sysfs: SysfsOptions = opts.sysfsRoot !== undefined ? { sysfsRoot: opts.sysfsRoot } : {};
    return new Group(group, p, native.openFd(p), sysfs);
  }

  /** Open the IOMMU group of PCI device `bdf` (found through its sysfs `iommu_group` link). */
  static openByBdf(bdf: string, opts: GroupOptions = {}): Group {
    return Group.open(Group.numberOf(bdf, opts), opts);
  }

  /**
   * Open the IOMMU group of mediated device `uuid` (its sysfs `iommu_group` link): the group the
   * mdev driver registered it in, which holds that device alone.
   * @throws VfioError ENOENT naming the mediated devices there are
   */
  static openByMdev(uuid: string, opts: GroupOptions = {}): Group {
    return Group.open(mdevGroupNumber(uuid, opts), opts);
  }

  /**
   * The IOMMU group number of PCI device `bdf`.
   * @throws VfioError ENOENT when the device does not exist or has no group
   */
  static numberOf(bdf: string, opts: SysfsOptions = {}): number {
    return groupNumberOf(bdf, opts);
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The container this group is attached to, or null. */
  get container(): Container | null {
    return this.#container;
  }

  /** VFIO_GROUP_GET_STATUS. */
  status(): GroupStatus {
    const flags = native.vfioGroupStatus(this.#open('VFIO_GROUP_GET_STATUS'));
    return {
      viable: (flags & VFIO_GROUP_FLAGS_VIABLE) !== 0,
      containerSet: (flags & VFIO_GROUP_FLAGS_CONTAINER_SET) !== 0,
    };
  }

  /** The devices in this group with their drivers, read from sysfs. */
  members(): GroupMember[] {
    return groupMembers(this.number, this.#sysfs);
  }

  /**
   * Attach this group to `c`.
   * @throws VfioError ENOTVIABLE listing every member with its driver, EINVAL when the group is
   * already in a container, or the kernel's error
   */
  setContainer(c: Container): void {
    const h = this.#open('VFIO_GROUP_SET_CONTAINER');
    if (this.#container !== null) {
      // The kernel answers with a bare EINVAL; which case it is, is known here.
      const same = this.#container === c;
      throw new VfioError({
        message: `VFIO_GROUP_SET_CONTAINER: group ${this.number} is already attached to ${same ? 'this' : 'another'} container`,
        code: 'EINVAL',
        errno: 22,
        op: 'VFIO_GROUP_SET_CONTAINER',
        path: this.path,
        hint: same
          ? 'nothing to do: the group stays attached until group.unsetContainer() or group.close()'
          : 'a group belongs to one container at a time: call group.unsetContainer() first, then attach it to the other one',
      });
    }
    if (!this.status().viable) throw this.#notViable('VFIO_GROUP_SET_CONTAINER');
    native.vfioGroupSetContainer(h, containerHandle(c));
    this.#container = c;
    c._groupAttached(1);
  }

  /** Detach this group from its container (no-op when not attached). */
  unsetContainer(): void {
    const h = this.#open('VFIO_GROUP_UNSET_CONTAINER');
    if (this.#container === null) return;
    native.vfioGroupUnsetContainer(h);
    this.#container._groupAttached(-1);
    this.#container = null;
  }

  /**
   * Get a device of this group by PCI address, or a mediated device by its UUID. The group must be
   * in a container with an IOMMU set.
   * @throws VfioError ENOTVIABLE, or the kernel's error with a hint
   */
  openDevice(bdf: string): Device {
    const { h, dev } = this.#beginOpen(bdf);
    let handle: NativeHandle;
    try {
      handle = native.vfioGroupGetDeviceFd(h, dev);
    } catch (e) {
      throw this.#openFailed(e, dev);
    }
    return Device._fromHandle(handle, dev, this.path);
  }

  /**
   * {@link Group.openDevice} with VFIO_GROUP_GET_DEVICE_FD on the libuv thread pool: vfio-pci
   * enables the device there (and may reset it), which takes tens of ms on the caller's thread.
   * Arguments and state are checked at once, as openDevice checks them. The kernel's open cannot be
   * interrupted: when `signal` aborts meanwhile, the device is closed again once it opened, and the
   * promise rejects with the signal's reason.
   */
  async openDeviceAsync(bdf: string, opts: { signal?: AbortSignal } = {}): Promise<Device> {
    opts.signal?.throwIfAborted();
    const { h, dev } = this.#beginOpen(bdf);
    let handle: NativeHandle;
    opening.add(dev);
    try {
      handle = await native.vfioGroupGetDeviceFdAsync(h, dev);
    } catch (e) {
      throw this.#openFailed(e, dev);
    } finally {
      opening.delete(dev);
    }
    if (opts.signal?.aborted) {
      await native.closeFdAsync(handle);
      opts.signal.throwIfAborted();
    }
    // Another open of the same device may have finished while this one ran.
    const owner = openDeviceOwner(dev);
    if (owner !== undefined) {
      await native.closeFdAsync(handle);
      throw this.#alreadyOpen(dev, owner);
    }
    return Device._fromHandle(handle, dev, this.path);
  }

  /** The checks before VFIO_GROUP_GET_DEVICE_FD: the group is open, the device not open already. */
  #beginOpen(bdf: string): { h: NativeHandle; dev: string } {
    const h = this.#open('VFIO_GROUP_GET_DEVICE_FD');
    const dev = normalizeDeviceName(bdf);
    const owner = opening.has(dev) ? 'an openDeviceAsync still under way' : openDeviceOwner(dev);
    if (owner !== undefined) throw this.#alreadyOpen(dev, owner);
    return { h, dev };
  }

  #alreadyOpen(dev: string, owner: string): VfioError {
    return new VfioError({
      message: `VFIO_GROUP_GET_DEVICE_FD: ${dev} is already open in this process (through ${owner})`,
      code: 'EBUSY',
      op: 'VFIO_GROUP_GET_DEVICE_FD',
      path: this.path,
      bdf: dev,
      hint:
        'two Device objects on one device would both drive it: use the Device already open, or ' +
        'close it before opening the device again',
    });
  }

  /** VFIO_GROUP_GET_DEVICE_FD failed with `e`: the error to throw, with the group's state as hint. */
  #openFailed(e: unknown, dev: string): unknown {
    if (!(e instanceof VfioError)) return e;
    let status: GroupStatus;
    try {
      status = this.status();
    } catch {
      return e; // the status is only for the hint; the first failure is the one to report
    }
    if (!status.viable) return this.#notViable('VFIO_GROUP_GET_DEVICE_FD', e);
    if (e.code === 'ENODEV') return this.#notMember(dev, e);
    if (!status.containerSet || this.#container?.iommuType === null) {
      return new VfioError({
        message: e.message.split('\n')[0]!,
        code: e.code,
        ...(e.errno !== undefined ? { errno: e.errno } : {}),
        op: e.op,
        path: this.path,
        bdf: dev,
        hint: 'attach the group first: group.setContainer(container); container.setIommu()',
      });
    }
    return e;
  }

  /** Close the group node. Idempotent; later use throws VfioError `'ECLOSED'`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#container !== null) this.#container._groupAttached(-1);
    this.#container = null;
    removeOpenGroup(this);
    native.closeFd(this.#handle);
  }

  /** Same as {@link Group.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(op: string): NativeHandle {
    if (this.#closed) throw closedError(op, `group ${this.number}`, { path: this.path });
    return this.#handle;
  }

  /** ENODEV from the kernel: the device is not in this group. Say which devices are, and where it is. */
  #notMember(dev: string, cause: VfioError): VfioError {
    let members = 'unknown (sysfs unreadable)';
    try {
      members =
        this.members()
          .map((m) => m.bdf)
          .join(', ') || 'none';
    } catch {
      // sysfs unreadable: the message still says the device is not a member.
    }
    let where = '';
    try {
      const mdev = isMdevUuid(dev);
      where = `; ${dev} is in group ${deviceGroupNumber(dev, this.#sysfs)}: open it with Group.${mdev ? 'openByMdev' : 'openByBdf'}('${dev}')`;
    } catch {
      where = `; ${dev} is in no IOMMU group (no such device, or not bound to a VFIO driver)`;
    }
    return new VfioError({
      message: `${dev} is not a device of group ${this.number}`,
      code: 'ENODEV',
      ...(cause.errno !== undefined ? { errno: cause.errno } : {}),
      op: 'VFIO_GROUP_GET_DEVICE_FD',
      path: this.path,
      bdf: dev,
      hint: `group ${this.number} holds ${members}${where}`,
    });
  }

  #notViable(op: string, cause?: VfioError): VfioError {
    let members: GroupMember[] = [];
    try {
      members = this.members();
    } catch {
      // sysfs unreadable: the message still says the group is not viable.
    }
    return new VfioError({
      message: `group ${this.number} is not viable`,
      code: 'ENOTVIABLE',
      ...(cause?.errno !== undefined ? { errno: cause.errno } : {}),
      op,
      path: this.path,
      hint: notViableHint(this.number, members, this.#sysfs),
    });
  }
}
