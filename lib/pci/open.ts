/**
 * Assembling a device by its address: opened into an IOMMU context (the caller's Container or Ioas,
 * or one of its own of the backend asked for: iommufd through the device's cdev, or type1 through
 * its group), and handed to a builder. If the builder fails, everything opened here is closed
 * again; if it succeeds, the built device owns it and closes it with itself.
 * VfioPciDevice.openByBdf and openByBdfAsync build a VfioPciDevice this way; the builder is a
 * parameter so that this file needs nothing of device.ts.
 */
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

/** Options of {@link VfioPciDevice.openByBdf}. */
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
    return build(opening.adopt(opening.context.openDevice(bdf)), opening);
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
    return await build(opening.adopt(await opening.context.openDeviceAsync(bdf)), opening);
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

  constructor(bdf: string, opts: OpenByBdfOptions) {
    if (typeof bdf !== 'string') throw new ArgTypeError(`BDF must be a string, got ${typeof bdf}`);
    if (opts.container !== undefined && opts.iommu !== undefined) {
      throw new ArgTypeError('openByBdf: give container or iommu, not both');
    }
    // Loaded here only: the rest of lib/pci runs without the native addon.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const vfio = require('../vfio') as typeof import('../vfio');
    if (opts.container !== undefined) this.context = vfio.Type1Backend.wrap(opts.container);
    else if (opts.iommu instanceof vfio.Ioas) this.context = vfio.IommufdBackend.wrap(opts.iommu);
    else if (opts.iommu !== undefined) this.context = opts.iommu;
    else {
      const own = vfio.openBackend(bdf, { backend: vfio.checkBackendChoice(opts.backend) });
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
