/**
 * Assembling a device by its name: opened into an IOMMU context (the caller's Container or Ioas,
 * or one of its own of the backend asked for: iommufd through the device's cdev, or type1 through
 * its group), and handed to a builder. If the builder fails, everything opened here is closed
 * again; if it succeeds, the built device owns it and closes it with itself.
 * VfioPciDevice.openByBdf and openByMdev (and their async forms) build a VfioPciDevice this way; the
 * builder is a parameter so that this file needs nothing of device.ts.
 *
 * A device is named by a {@link DeviceRoute}: a PCI address or a mediated device's UUID. Either
 * opens on either backend: through its group (type1), or through its cdev (iommufd; a mediated
 * device's is /sys/bus/mdev/devices/UUID/vfio-dev/vfioN), and `auto` decides for each as it does
 * for the other.
 */
import { turn } from '../base/steps';
import { ArgTypeError } from '../base/error';
import type {
  BackendDevice,
  Container,
  Device,
  Group,
  Ioas,
  VfioBackend,
  VfioBackendChoice,
  VfioBackendKind,
} from '../vfio';
import type { VfioPciDeviceOptions } from './build';

/**
 * What a device opened by BDF holds besides the VFIO device: its group (type1), the file KVM's VFIO
 * device is given, and what to close with it.
 * @internal
 */
export interface PciDeviceOwnership {
  /** The group the device was opened from (type1), or null (iommufd). */
  readonly group: Group | null;
  /** What KVM_DEV_VFIO_FILE_ADD is given: the group (type1) or the device cdev (iommufd). */
  readonly vfioFile: { readonly fd: number };
  /** Which backend the device was opened through. */
  readonly backend: VfioBackendKind;
  /** Closes the VFIO device, its group and an IOMMU context opened for it, in that order. Idempotent. */
  release(): void;
}

/** How a device is reached: its VFIO name and what kind of device it is. @internal */
export interface DeviceRoute {
  /** What the device is called in messages, in sysfs and in VFIO_GROUP_GET_DEVICE_FD. */
  readonly name: string;
  /** A PCI function (`name` is its address) or a mediated device (`name` is its UUID). */
  readonly kind: 'pci' | 'mdev';
}

/** The route to the vfio-pci device at `bdf`. @internal */
export function pciRoute(bdf: string): DeviceRoute {
  if (typeof bdf !== 'string') throw new ArgTypeError(`BDF must be a string, got ${typeof bdf}`);
  return { name: bdf, kind: 'pci' };
}

/** The route to mediated device `uuid`. @internal */
export function mdevRoute(uuid: string): DeviceRoute {
  if (typeof uuid !== 'string') throw new ArgTypeError(`an mdev UUID must be a string, got ${typeof uuid}`);
  return { name: uuid, kind: 'mdev' };
}

/** Options of {@link VfioPciDevice.openByBdf} and {@link VfioPciDevice.openByMdev}. */
export interface OpenByBdfOptions extends VfioPciDeviceOptions {
  /**
   * The type1 container to attach the device's group to, for VMMs with several devices. Without it
   * (and without `iommu`) the device gets an IOMMU context of its own, closed with the device.
   */
  container?: Container;
  /** The IOMMU context to open the device into: a VfioBackend, or an iommufd Ioas. */
  iommu?: VfioBackend | Ioas;
  /** The backend of a context of the device's own (default `auto`: iommufd where it can be had). */
  backend?: VfioBackendChoice;
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
    return build(opening.adopt(opening.context.openDevice(route.name)), opening);
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
    const device = opening.adopt(await opening.context.openDeviceAsync(route.name));
    // The open's own tail (attaching the device to the IOMMU context) and the build's first step
    // each get a turn of the event loop.
    await turn();
    return await build(device, opening);
  } catch (e) {
    opening.release();
    throw e;
  }
}

/** The IOMMU context chosen or opened, the device once opened, and what closes them again. */
class Opening implements PciDeviceOwnership {
  readonly context: VfioBackend;
  #opened: BackendDevice | null = null;
  readonly #cleanup: (() => void)[] = [];

  constructor(route: DeviceRoute, opts: OpenByBdfOptions) {
    if (opts.container !== undefined && opts.iommu !== undefined) {
      throw new ArgTypeError(`opening ${route.name}: give container or iommu, not both`);
    }
    // Loaded here only: the rest of lib/pci runs without the native addon.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const vfio = require('../vfio') as typeof import('../vfio');
    const backend = vfio.checkBackendChoice(opts.backend);
    if (opts.container !== undefined) this.context = vfio.Type1Backend.wrap(opts.container);
    else if (opts.iommu instanceof vfio.Ioas) this.context = vfio.IommufdBackend.wrap(opts.iommu);
    else if (opts.iommu !== undefined) this.context = opts.iommu;
    else {
      const own = vfio.openBackend(route.name, { backend });
      this.#cleanup.push(() => own.close());
      this.context = own;
    }
  }

  get group(): Group | null {
    return this.#opened?.group ?? null;
  }

  get vfioFile(): { readonly fd: number } {
    return this.#opened?.vfioFile ?? { fd: -1 };
  }

  get backend(): VfioBackendKind {
    return this.context.kind;
  }

  /** Closes the device (and its group) with the rest from now on. */
  adopt(opened: BackendDevice): Device {
    this.#opened = opened;
    this.#cleanup.push(() => opened.release());
    return opened.device;
  }

  release(): void {
    for (const fn of this.#cleanup.splice(0).reverse()) fn();
  }
}
