/**
 * Assembling a device by its address: its group opened and attached to a container (the caller's,
 * or one of its own with the best IOMMU type), the VFIO device opened from the group and handed to
 * a builder. If the builder fails, everything opened here is closed again; if it succeeds, the built
 * device owns it and closes it with itself. VfioPciDevice.openByBdf and openByBdfAsync build a
 * VfioPciDevice this way; the builder is a parameter so that this file needs nothing of device.ts.
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

/** Options of {@link VfioPciDevice.openByBdf}. */
export interface OpenByBdfOptions extends VfioPciDeviceOptions {
  /**
   * The container to attach the device's group to, for VMMs with several devices. Without it the
   * device gets a container of its own, closed with the device.
   */
  container?: Container;
}

/**
 * openByBdf: `build(device, ownership)` over the VFIO device at `bdf`, opened here. Whatever was
 * opened is released when `build` throws. @internal
 */
export function openByBdf<T>(
  bdf: string,
  opts: OpenByBdfOptions,
  build: (d: Device, o: PciDeviceOwnership) => T,
): T {
  const opening = new Opening(bdf, opts);
  try {
    return build(opening.adopt(opening.group.openDevice(bdf)), opening);
  } catch (e) {
    opening.release();
    throw e;
  }
}

/**
 * {@link openByBdf} with the device opened on the libuv thread pool (vfio-pci enables it there, and
 * may reset it) and an asynchronous `build`. @internal
 */
export async function openByBdfAsync<T>(
  bdf: string,
  opts: OpenByBdfOptions,
  build: (d: Device, o: PciDeviceOwnership) => Promise<T>,
): Promise<T> {
  const opening = new Opening(bdf, opts);
  try {
    return await build(opening.adopt(await opening.group.openDeviceAsync(bdf)), opening);
  } catch (e) {
    opening.release();
    throw e;
  }
}

/** The group opened and attached to its container, and what closes them again. */
class Opening implements PciDeviceOwnership {
  readonly group: Group;
  readonly #cleanup: (() => void)[] = [];

  constructor(bdf: string, opts: OpenByBdfOptions) {
    if (typeof bdf !== 'string') throw new ArgTypeError(`BDF must be a string, got ${typeof bdf}`);
    // Loaded here only: the rest of lib/pci runs without the native addon.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const vfio = require('../vfio') as typeof import('../vfio');
    const container = opts.container ?? vfio.Container.open();
    if (opts.container === undefined) this.#cleanup.push(() => container.close());
    try {
      const group = vfio.Group.openByBdf(bdf);
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
