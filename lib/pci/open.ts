/**
 * Assembling a device by its name: its group opened and attached to a container (the caller's, or
 * one of its own with the best IOMMU type), the VFIO device opened from the group and handed to a
 * builder. If the builder fails, everything opened here is closed again; if it succeeds, the built
 * device owns it and closes it with itself. VfioPciDevice.openByBdf and openByMdev (and their async
 * forms) build a VfioPciDevice this way; the builder is a parameter so that this file needs nothing
 * of device.ts.
 *
 * A device is named by a {@link DeviceRoute}: a PCI address (its group found through the PCI
 * device's `iommu_group`) or a mediated device's UUID (through the mdev's). Both reach the device
 * through its group; opening a device through its cdev (/dev/vfio/devices/vfioN, bound to an
 * iommufd) is a route of its own that plugs in here: an Opening whose `group` is the cdev's fd for
 * KVM's VFIO device and whose release closes the iommufd objects.
 */
import { ArgTypeError } from '../base/error';
import type { Container, Device, Group } from '../vfio';
import type { VfioPciDeviceOptions } from './build';

/**
 * What a device opened by BDF holds besides the VFIO device: its group, and what to close with it.
 * @internal
 */
export interface PciDeviceOwnership {
  /** The group the device was opened from, for KVM's VFIO device. */
  readonly group: { readonly fd: number };
  /** Closes the VFIO device, its group and a container opened for it, in that order. Idempotent. */
  release(): void;
}

/** How a device is reached: its VFIO name, and how its group is found. @internal */
export interface DeviceRoute {
  /** What the device is called in messages and in VFIO_GROUP_GET_DEVICE_FD. */
  readonly name: string;
  /** Open the device's group (not yet attached). */
  openGroup(vfio: typeof import('../vfio')): Group;
}

/** The route to the vfio-pci device at `bdf`. @internal */
export function pciRoute(bdf: string): DeviceRoute {
  if (typeof bdf !== 'string') throw new ArgTypeError(`BDF must be a string, got ${typeof bdf}`);
  return { name: bdf, openGroup: (vfio) => vfio.Group.openByBdf(bdf) };
}

/** The route to mediated device `uuid`. @internal */
export function mdevRoute(uuid: string): DeviceRoute {
  if (typeof uuid !== 'string') throw new ArgTypeError(`an mdev UUID must be a string, got ${typeof uuid}`);
  return { name: uuid, openGroup: (vfio) => vfio.Group.openByMdev(uuid) };
}

/** Options of {@link VfioPciDevice.openByBdf} and {@link VfioPciDevice.openByMdev}. */
export interface OpenByBdfOptions extends VfioPciDeviceOptions {
  /**
   * The container to attach the device's group to, for VMMs with several devices. Without it the
   * device gets a container of its own, closed with the device.
   */
  container?: Container;
}

/**
 * openVfioDevice: `build(device, ownership)` over the VFIO device `route` names, opened here.
 * Whatever was opened is released when `build` throws. @internal
 */
export function openVfioDevice<T>(
  route: DeviceRoute,
  opts: OpenByBdfOptions,
  build: (d: Device, o: PciDeviceOwnership) => T,
): T {
  const opening = new Opening(route, opts);
  try {
    return build(opening.adopt(opening.group.openDevice(route.name)), opening);
  } catch (e) {
    opening.release();
    throw e;
  }
}

/**
 * {@link openVfioDevice} with the device opened on the libuv thread pool (vfio-pci enables it
 * there, and may reset it) and an asynchronous `build`. @internal
 */
export async function openVfioDeviceAsync<T>(
  route: DeviceRoute,
  opts: OpenByBdfOptions,
  build: (d: Device, o: PciDeviceOwnership) => Promise<T>,
): Promise<T> {
  const opening = new Opening(route, opts);
  try {
    return await build(opening.adopt(await opening.group.openDeviceAsync(route.name)), opening);
  } catch (e) {
    opening.release();
    throw e;
  }
}

/** The group opened and attached to its container, and what closes them again. */
class Opening implements PciDeviceOwnership {
  readonly group: Group;
  readonly #cleanup: (() => void)[] = [];

  constructor(route: DeviceRoute, opts: OpenByBdfOptions) {
    // Loaded here only: the rest of lib/pci runs without the native addon.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const vfio = require('../vfio') as typeof import('../vfio');
    const container = opts.container ?? vfio.Container.open();
    if (opts.container === undefined) this.#cleanup.push(() => container.close());
    try {
      const group = route.openGroup(vfio);
      this.#cleanup.push(() => group.close());
      group.setContainer(container);
      if (container.iommuType === null) container.setIommu();
      this.group = group;
    } catch (e) {
      this.release();
      throw e;
    }
  }

  /** Closes `device` with the rest from now on. */
  adopt(device: Device): Device {
    this.#cleanup.push(() => device.close());
    return device;
  }

  release(): void {
    for (const fn of this.#cleanup.splice(0).reverse()) fn();
  }
}
