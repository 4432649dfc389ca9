/**
 * The two IOMMU backends as one interface for whoever opens devices into a shared IOMMU context
 * (lib/pci's openByBdf, lib/vmm's Machine, the CLI): a type1 Container that devices join through
 * their groups, or an iommufd with one IOAS that devices join through their cdevs. Each hands out
 * the Device (the same class either way), where its DMA is mapped (a DmaBackend), and the file KVM's
 * VFIO device is told about.
 */
import { ArgTypeError } from '../base/error';
import { runSteps, runStepsAsync } from '../base/steps';
import {
  chooseBackend,
  type BackendDecision,
  type BackendProbeOptions,
  type VfioBackendChoice,
} from './backend';
import { openCdevDevice, openCdevDeviceAsync } from './cdev';
import { Container } from './container';
import type { Device } from './device';
import type { DmaBackend, VfioBackendKind } from './dma-types';
import { Group } from './group';
import { Iommufd } from './iommufd';
import type { Ioas } from './ioas';
import { isMdevUuid, mdevGroupNumber } from './mdev/sysfs';

/** A device opened into a {@link VfioBackend}, and what closes it. */
export interface BackendDevice {
  /** The open VFIO device. */
  readonly device: Device;
  /** The group it was opened through (type1), or null: iommufd opens no group. */
  readonly group: Group | null;
  /** The IOMMU group number, from sysfs (either backend). */
  readonly groupNumber: number;
  /** What KVM_DEV_VFIO_FILE_ADD is given: the group fd (type1) or the device cdev fd (iommufd). */
  readonly vfioFile: {
    /** The fd's number; -1 once the device (iommufd) or its group (type1) is closed. */
    readonly fd: number;
  };
  /** Close the device, then its group (type1). Idempotent. */
  release(): void;
}

/** Options of {@link VfioBackend.openDevice}. */
export interface BackendOpenOptions {
  /** Stops the open: the promise rejects with the signal's reason, and a device opened meanwhile is closed again. */
  signal?: AbortSignal;
}

/** An IOMMU context devices are opened into: see {@link Type1Backend} and {@link IommufdBackend}. */
export interface VfioBackend extends Disposable {
  /** Which uAPI the devices are opened through: `type1` or `iommufd`. */
  readonly kind: VfioBackendKind;
  /** Why this backend, when {@link openBackend} chose it; null when made from objects the caller opened. */
  readonly decision: BackendDecision | null;
  /** Where the devices' DMA is mapped: the Container (type1) or the Ioas (iommufd). */
  readonly dma: DmaBackend;
  /** True once its Container (type1) or its Ioas (iommufd) is closed, by close() or by whoever owns it. */
  readonly closed: boolean;
  /** Open `bdf` into this context; its DMA goes through {@link dma} from then on. */
  openDevice(bdf: string): BackendDevice;
  /** {@link openDevice} with the kernel's slow part (opening the device in vfio-pci) on the thread pool. */
  openDeviceAsync(bdf: string, opts?: BackendOpenOptions): Promise<BackendDevice>;
  /** Close what the context opened itself (not a Container it was given). Close the devices first. */
  close(): void;
}

/**
 * type1: devices join a Container through their groups (VFIO_GROUP_SET_CONTAINER), the container
 * getting the best type1 IOMMU with the first one.
 */
export class Type1Backend implements VfioBackend {
  /** Always `type1`. */
  readonly kind = 'type1' as const;
  readonly decision: BackendDecision | null;
  /** The container the devices' groups join: opened by {@link openBackend}, or the caller's. */
  readonly container: Container;
  readonly #owned: boolean;
  readonly #probe: BackendProbeOptions;

  private constructor(
    container: Container,
    owned: boolean,
    decision: BackendDecision | null,
    probe: BackendProbeOptions,
  ) {
    this.container = container;
    this.#owned = owned;
    this.decision = decision;
    this.#probe = probe;
  }

  /** A context over a new container (`/dev/vfio/vfio`), closed with the context. */
  static open(decision: BackendDecision | null = null, probe: BackendProbeOptions = {}): Type1Backend {
    return new Type1Backend(Container.open(probe.containerPath), true, decision, probe);
  }

  /** A context over the caller's container, which the caller closes. */
  static wrap(container: Container): Type1Backend {
    return new Type1Backend(container, false, null, {});
  }

  /** The container: where the devices' DMA is mapped. */
  get dma(): DmaBackend {
    return this.container;
  }

  /** True once the container is closed. */
  get closed(): boolean {
    return this.container.closed;
  }

  /**
   * Open `bdf` (or a mediated device's UUID) through its group, attached to the container (which
   * gets its IOMMU type with the first).
   */
  openDevice(bdf: string): BackendDevice {
    const group = this.#join(bdf);
    try {
      return this.#opened(group, group.openDevice(bdf));
    } catch (e) {
      group.close();
      throw e;
    }
  }

  /** {@link openDevice} with VFIO_GROUP_GET_DEVICE_FD on the libuv thread pool. */
  async openDeviceAsync(bdf: string, opts: BackendOpenOptions = {}): Promise<BackendDevice> {
    const group = this.#join(bdf);
    try {
      return this.#opened(group, await group.openDeviceAsync(bdf, opts));
    } catch (e) {
      group.close();
      throw e;
    }
  }

  /** The device's group, open and in the container, which has its IOMMU type. */
  #join(name: string): Group {
    const sysfs = this.#probe.sysfsRoot !== undefined ? { sysfsRoot: this.#probe.sysfsRoot } : {};
    // A PCI address, or a mediated device's UUID (its group holds it alone).
    const group = isMdevUuid(name) ? Group.openByMdev(name, sysfs) : Group.openByBdf(name, sysfs);
    try {
      group.setContainer(this.container);
      if (this.container.iommuType === null) this.container.setIommu();
      return group;
    } catch (e) {
      group.close();
      throw e;
    }
  }

  #opened(group: Group, device: Device): BackendDevice {
    let released = false;
    return {
      device,
      group,
      groupNumber: group.number,
      vfioFile: group,
      release: () => {
        if (released) return;
        released = true;
        try {
          device.close();
        } finally {
          group.close();
        }
      },
    };
  }

  /** Close the container when this context opened it (not one given to {@link Type1Backend.wrap}). */
  close(): void {
    if (this.#owned) this.container.close();
  }

  /** Same as {@link Type1Backend.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * iommufd: devices are opened through their cdevs, bound to one iommufd and attached to one IOAS
 * (the kernel makes a page table for each IOMMU they sit behind; a mediated device, behind none, is
 * an access its parent driver pins pages through). No group is opened.
 */
export class IommufdBackend implements VfioBackend {
  /** Always `iommufd`. */
  readonly kind = 'iommufd' as const;
  readonly decision: BackendDecision | null;
  /** The iommufd the device cdevs are bound to: opened by {@link openBackend}, or the caller's. */
  readonly iommufd: Iommufd;
  /** The IO address space in `iommufd` the devices are attached to, where their DMA is mapped. */
  readonly ioas: Ioas;
  readonly #owned: boolean;
  readonly #probe: BackendProbeOptions;

  private constructor(
    iommufd: Iommufd,
    ioas: Ioas,
    owned: boolean,
    decision: BackendDecision | null,
    probe: BackendProbeOptions,
  ) {
    this.iommufd = iommufd;
    this.ioas = ioas;
    this.#owned = owned;
    this.decision = decision;
    this.#probe = probe;
  }

  /** A context over a new iommufd and IOAS, closed with the context. */
  static open(decision: BackendDecision | null = null, probe: BackendProbeOptions = {}): IommufdBackend {
    const fd = Iommufd.open(probe.iommuPath);
    try {
      return new IommufdBackend(fd, fd.allocIoas(), true, decision, probe);
    } catch (e) {
      fd.close();
      throw e;
    }
  }

  /**
   * A context over the caller's IOAS (and its iommufd), which the caller closes.
   * @throws ArgTypeError when `ioas.iommufd` is not an Iommufd (an IOAS not from `allocIoas`)
   */
  static wrap(ioas: Ioas): IommufdBackend {
    const fd = ioas.iommufd;
    if (!(fd instanceof Iommufd)) {
      throw new ArgTypeError(
        'IommufdBackend.wrap: the IOAS must come from Iommufd.allocIoas() (its iommufd is not an Iommufd)',
      );
    }
    return new IommufdBackend(fd, ioas, false, null, {});
  }

  /** The IOAS: where the devices' DMA is mapped. */
  get dma(): DmaBackend {
    return this.ioas;
  }

  /** True once the IOAS (or its iommufd) is closed. */
  get closed(): boolean {
    return this.ioas.closed;
  }

  /**
   * Open `bdf` (or a mediated device's UUID) through its cdev, bound to the iommufd and attached to
   * the IOAS.
   */
  openDevice(bdf: string): BackendDevice {
    return this.#attach(openCdevDevice(bdf, this.iommufd, this.#probe));
  }

  /** {@link openDevice} with VFIO_DEVICE_BIND_IOMMUFD on the libuv thread pool. */
  async openDeviceAsync(bdf: string, opts: BackendOpenOptions = {}): Promise<BackendDevice> {
    const d = await openCdevDeviceAsync(bdf, this.iommufd, { ...this.#probe, ...opts });
    return this.#attach(d);
  }

  #attach(device: Device): BackendDevice {
    try {
      this.ioas.attach(device);
    } catch (e) {
      device.close();
      throw e;
    }
    let groupNumber = -1;
    const sysfs = this.#probe.sysfsRoot !== undefined ? { sysfsRoot: this.#probe.sysfsRoot } : {};
    try {
      groupNumber = isMdevUuid(device.bdf)
        ? mdevGroupNumber(device.bdf, sysfs)
        : Group.numberOf(device.bdf, sysfs);
    } catch {
      // A device on a cdev has an IOMMU group; sysfs unreadable only loses the number.
    }
    return {
      device,
      group: null,
      groupNumber,
      vfioFile: device,
      release: () => device.close(),
    };
  }

  /**
   * Close the iommufd (its IOAS unmapped and destroyed) when this context opened it (not one given to
   * {@link IommufdBackend.wrap}).
   */
  close(): void {
    if (this.#owned) this.iommufd.close();
  }

  /** Same as {@link IommufdBackend.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Options of {@link openBackend}. */
export interface OpenBackendOptions extends BackendProbeOptions {
  /** Which backend (default `auto`). */
  backend?: VfioBackendChoice;
}

/**
 * openBackend: a new IOMMU context for device `bdf` (or for devices not named yet: null), of the
 * backend {@link chooseBackend} picks; `decision` on it says why.
 * @throws VfioError when the backend asked for cannot be had (see chooseBackend), or the open's error
 */
export function openBackend(bdf: string | null, opts: OpenBackendOptions = {}): VfioBackend {
  return runSteps(openBackendSteps(bdf, opts));
}

/**
 * {@link openBackend} with a turn of the event loop between the probe (chooseBackend's reads of
 * sysfs and /dev) and the open: under emulation each holds the loop for milliseconds.
 * @throws VfioError as openBackend does, as a rejection
 */
export function openBackendAsync(bdf: string | null, opts: OpenBackendOptions = {}): Promise<VfioBackend> {
  return runStepsAsync(openBackendSteps(bdf, opts));
}

function* openBackendSteps(bdf: string | null, opts: OpenBackendOptions): Generator<void, VfioBackend> {
  const decision = chooseBackend(bdf, opts.backend ?? 'auto', opts);
  yield;
  return decision.backend === 'iommufd'
    ? IommufdBackend.open(decision, opts)
    : Type1Backend.open(decision, opts);
}

/** A context over objects the caller opened: a Container (type1) or an Ioas (iommufd). */
export function backendOf(dma: Container | Ioas): VfioBackend {
  if (dma instanceof Container) return Type1Backend.wrap(dma);
  if (dma !== null && typeof dma === 'object' && dma.kind === 'iommufd') return IommufdBackend.wrap(dma);
  throw new ArgTypeError('backendOf: expected a Container or an Ioas');
}
