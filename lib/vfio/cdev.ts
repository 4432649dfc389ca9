/**
 * The VFIO device cdev (`/dev/vfio/devices/vfioN`, Linux 6.6+ with VFIO_DEVICE_CDEV): finding a
 * device's cdev in sysfs, and opening it bound to an iommufd. Once bound, the cdev fd is an ordinary
 * VFIO device fd: the returned Device works as one opened through its group. No group is opened.
 *
 * A device is a PCI function on vfio-pci (named by its address) or a mediated device (named by its
 * UUID, `/sys/bus/mdev/devices/UUID/vfio-dev`). A mediated device sits behind no IOMMU: the bind
 * makes it an iommufd access (the parent driver pins and reads pages through the IOAS it is
 * attached to) instead of an iommufd device with a page table.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import { native, type NativeHandle } from '../native';
import { Device } from './device';
import { openDeviceOwner } from './open-objects';
import { iommufdHandle, type IommufdHandle } from './iommufd-handle';
import { isMdevUuid, normalizeMdevUuid } from './mdev/sysfs';
import { normalizeBdf, sysfsRoot, type SysfsOptions } from './sysfs';

/** Where a device cdev is looked up. */
export interface CdevOptions extends SysfsOptions {
  /** Directory of the cdev nodes (default `/dev/vfio/devices`). */
  cdevDir?: string;
  /** The kernel's list of device majors (default `/proc/devices`). */
  procDevices?: string;
}

/** A device's cdev: its name and node. */
export interface DeviceCdev {
  /** `vfio0`, ... (the directory under the device's `vfio-dev`). */
  readonly name: string;
  /** The node to open, `/dev/vfio/devices/vfio0`. */
  readonly path: string;
}

/** Why a device has no cdev: the kernel lacks VFIO_DEVICE_CDEV, or the device is not on a vfio driver. */
export type NoCdevReason = 'no-device' | 'kernel' | 'driver';

/**
 * Whether the kernel has VFIO device cdevs (VFIO_DEVICE_CDEV): it then registers the `vfio-dev`
 * character major (/proc/devices). Every VFIO device is in the `vfio-dev` class either way; only
 * with cdevs does it get a device number, and a node.
 */
export function kernelHasCdevs(opts: CdevOptions = {}): boolean {
  try {
    return /^\s*\d+ vfio-dev$/m.test(fs.readFileSync(opts.procDevices ?? '/proc/devices', 'utf8'));
  } catch {
    return false;
  }
}

/**
 * A device's name as sysfs spells it: a PCI address (`dddd:bb:dd.f`) or a mediated device's UUID
 * (lower case).
 * @throws RangeError when `name` is neither
 */
export function normalizeDeviceName(name: string): string {
  return isMdevUuid(name) ? normalizeMdevUuid(name) : normalizeBdf(name);
}

/**
 * The cdev of device `bdf` (a PCI address, or a mediated device's UUID), or why it has none: its
 * `vfio-dev/vfioN` in sysfs, with a device number in its `dev`. A PCI function has one while it is
 * bound to vfio-pci, a mediated device while its parent's driver has it registered with VFIO, on a
 * kernel built with VFIO_DEVICE_CDEV.
 */
export function findCdev(
  bdf: string,
  opts: CdevOptions = {},
):
  | DeviceCdev
  | {
      /** Why the device has no cdev: no such device, a kernel without cdevs, or not on a vfio driver. */
      none: NoCdevReason;
      /** One sentence naming what was looked for and not found, for a message. */
      detail: string;
    } {
  const dev = normalizeDeviceName(bdf);
  const mdev = isMdevUuid(dev);
  const root = sysfsRoot(opts);
  const devDir = path.join(root, mdev ? 'bus/mdev/devices' : 'bus/pci/devices', dev);
  if (!fs.existsSync(devDir)) {
    return {
      none: 'no-device',
      detail: mdev
        ? `no mediated device ${dev} in ${root}/bus/mdev/devices`
        : `no PCI device ${dev} in ${root}`,
    };
  }
  let names: string[] = [];
  try {
    names = fs.readdirSync(path.join(devDir, 'vfio-dev')).filter((n) => /^vfio\d+$/.test(n));
  } catch {
    // No vfio-dev directory: said below.
  }
  const name = names.sort()[0];
  if (name !== undefined && fs.existsSync(path.join(devDir, 'vfio-dev', name, 'dev'))) {
    return { name, path: path.join(opts.cdevDir ?? '/dev/vfio/devices', name) };
  }
  if (name !== undefined || !kernelHasCdevs(opts)) {
    return {
      none: 'kernel',
      detail:
        `the kernel has no VFIO device cdevs (built without VFIO_DEVICE_CDEV: ` +
        (name !== undefined
          ? `${dev}'s ${name} has no device number)`
          : `no vfio-dev major in /proc/devices)`),
    };
  }
  let driver = 'no driver';
  try {
    driver = path.basename(fs.readlinkSync(path.join(devDir, 'driver')));
  } catch {
    // unbound
  }
  return {
    none: 'driver',
    detail: mdev
      ? `mediated device ${dev} has no vfio-dev cdev: its driver (${driver}) has not registered it with VFIO`
      : `${dev} has no vfio-dev cdev: it is on ${driver}, not vfio-pci`,
  };
}

/** The error for a device with no cdev (ENOCDEV), with what to do. */
export function noCdevError(
  bdf: string,
  why: { none: NoCdevReason; detail: string },
  op = 'open',
): VfioError {
  const mdev = isMdevUuid(bdf);
  const hint =
    why.none === 'kernel'
      ? 'a kernel with CONFIG_VFIO_DEVICE_CDEV=y (and IOMMUFD) has /dev/vfio/devices; here use the type1 backend'
      : why.none === 'driver'
        ? mdev
          ? 'check dmesg for its parent driver; the type1 backend opens it through its group, if it has one'
          : `bind it to vfio-pci first: vfio-bridge bind ${bdf}`
        : mdev
          ? 'vfio-bridge mdev list shows the mediated devices there are'
          : 'check the address with lspci -D';
  return new VfioError({ message: why.detail, code: 'ENOCDEV', op, bdf, hint });
}

/** The cdev of `bdf` (a PCI address or an mdev UUID), or ENOCDEV saying why there is none. */
export function cdevOf(bdf: string, opts: CdevOptions = {}): DeviceCdev {
  const c = findCdev(bdf, opts);
  if ('none' in c) throw noCdevError(normalizeDeviceName(bdf), c);
  return c;
}

/** The checks before a cdev is opened: the device is not open in this process already. */
function beginOpen(bdf: string, opts: CdevOptions): { dev: string; cdev: DeviceCdev } {
  const dev = normalizeDeviceName(bdf);
  const owner = openDeviceOwner(dev);
  if (owner !== undefined) {
    throw new VfioError({
      message: `VFIO_DEVICE_BIND_IOMMUFD: ${dev} is already open in this process (through ${owner})`,
      code: 'EBUSY',
      op: 'VFIO_DEVICE_BIND_IOMMUFD',
      bdf: dev,
      hint: 'two Device objects on one device would both drive it: use the Device already open, or close it first',
    });
  }
  return { dev, cdev: cdevOf(dev, opts) };
}

function bound(
  h: NativeHandle,
  dev: string,
  cdev: DeviceCdev,
  iommufd: IommufdHandle,
  devId: number,
): Device {
  return Device._fromHandle(h, dev, cdev.path, { iommufd, devId });
}

/**
 * Open device `bdf` (a PCI address, or a mediated device's UUID) through its cdev and bind it to
 * `iommufd`, an Iommufd or an IOAS's `iommufd` (VFIO_DEVICE_BIND_IOMMUFD: the driver opens the
 * device then). The Device is not attached
 * to any IOAS yet: its DMA is blocked until `ioas.attach(device)` (a mediated device's parent can pin
 * no page until then). Closing the Device unbinds it.
 * @throws VfioError ENOCDEV (no cdev: kernel without VFIO_DEVICE_CDEV, or not on vfio-pci), EACCES,
 * EBUSY (its group is open), or the kernel's
 */
export function openCdevDevice(bdf: string, iommufd: IommufdHandle, opts: CdevOptions = {}): Device {
  const { dev, cdev } = beginOpen(bdf, opts);
  const fd = iommufdHandle(iommufd, 'VFIO_DEVICE_BIND_IOMMUFD');
  const h = openNode(cdev, dev);
  try {
    return bound(h, dev, cdev, iommufd, native.vfioDeviceBindIommufd(h, fd));
  } catch (e) {
    native.closeFd(h);
    throw withBdf(e, dev);
  }
}

/**
 * {@link openCdevDevice} with the bind on the libuv thread pool (vfio-pci enables the device, and
 * may reset it, which takes tens of ms). When `signal` aborts meanwhile, the device is closed again
 * once bound, and the promise rejects with the signal's reason.
 */
export async function openCdevDeviceAsync(
  bdf: string,
  iommufd: IommufdHandle,
  opts: CdevOptions & { signal?: AbortSignal } = {},
): Promise<Device> {
  opts.signal?.throwIfAborted();
  const { dev, cdev } = beginOpen(bdf, opts);
  const fd = iommufdHandle(iommufd, 'VFIO_DEVICE_BIND_IOMMUFD');
  const h = openNode(cdev, dev);
  let devId: number;
  try {
    devId = await native.vfioDeviceBindIommufdAsync(h, fd);
  } catch (e) {
    await native.closeFdAsync(h);
    throw withBdf(e, dev);
  }
  if (opts.signal?.aborted || openDeviceOwner(dev) !== undefined) {
    await native.closeFdAsync(h);
    opts.signal?.throwIfAborted();
    beginOpen(dev, opts); // says who opened it meanwhile
  }
  return bound(h, dev, cdev, iommufd, devId);
}

/** open(2) of the cdev node; EBUSY there means the device's group is open. */
function openNode(cdev: DeviceCdev, dev: string): NativeHandle {
  try {
    return native.openFd(cdev.path);
  } catch (e) {
    throw withBdf(e, dev);
  }
}

/** The kernel's error for a cdev, with the device's address. */
function withBdf(e: unknown, bdf: string): unknown {
  if (!(e instanceof VfioError) || e.bdf !== undefined) return e;
  return new VfioError({
    message: e.message.split('\n')[0]!,
    code: e.code,
    op: e.op,
    bdf,
    ...(e.errno !== undefined ? { errno: e.errno } : {}),
    ...(e.path !== undefined ? { path: e.path } : {}),
    ...(e.hint !== undefined ? { hint: e.hint } : {}),
  });
}
