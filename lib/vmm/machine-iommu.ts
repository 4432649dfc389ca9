/**
 * The IOMMU context a Machine's devices share (a type1 container, or an iommufd IOAS): opened with
 * the first device added, which decides an `auto` backend, taken by every later one, and closed
 * again when the device it was opened for fails or is given back. Each step has a synchronous form
 * and one that opens the backend in turns of the event loop.
 */
import { closedError } from '../base/error';
import type { VfioPciDevice } from '../pci';
import { openBackend, openBackendAsync, type VfioBackend, type VfioBackendChoice } from '../vfio';

/** A device opened into the machine's IOMMU context, and whether the context was opened for it. */
export interface Opened {
  dev: VfioPciDevice;
  iommu: VfioBackend;
  fresh: boolean;
}

/** The IOMMU context of one Machine; `closed` says whether the machine was closed meanwhile. */
export class MachineIommu {
  #iommu: VfioBackend | null = null;
  readonly #backend: VfioBackendChoice;
  readonly #closed: () => boolean;

  constructor(backend: VfioBackendChoice, closed: () => boolean) {
    this.#backend = backend;
    this.#closed = closed;
  }

  /** The context (null until the first device is added). */
  get current(): VfioBackend | null {
    return this.#iommu;
  }

  /** Open a device with `open` into the machine's IOMMU context, opened with the first device. */
  open(bdf: string, open: (iommu: VfioBackend) => VfioPciDevice): Opened {
    const { iommu, fresh } = this.#take(bdf);
    try {
      return { dev: open(iommu), iommu, fresh };
    } catch (e) {
      this.#drop(iommu, fresh);
      throw e;
    }
  }

  /** {@link MachineIommu.open} with an asynchronous `open`. */
  async openAsync(bdf: string, open: (iommu: VfioBackend) => Promise<VfioPciDevice>): Promise<Opened> {
    const { iommu, fresh } = await this.#takeAsync(bdf);
    try {
      return { dev: await open(iommu), iommu, fresh };
    } catch (e) {
      this.#drop(iommu, fresh);
      throw e;
    }
  }

  /** A device that cannot be handed out: close it, and the IOMMU context it opened. */
  giveBack({ dev, iommu, fresh }: Opened): void {
    dev.close();
    this.#drop(iommu, fresh);
  }

  /** The machine's IOMMU context; the first device decides its backend (`auto`) and opens it. */
  #take(bdf: string): { iommu: VfioBackend; fresh: boolean } {
    if (this.#closed()) throw closedError('machine.addDevice', 'the machine', bdf);
    const fresh = this.#iommu === null;
    this.#iommu ??= openBackend(bdf, { backend: this.#backend });
    return { iommu: this.#iommu, fresh };
  }

  /**
   * {@link MachineIommu.#take} with the backend opened in turns of the event loop (openBackendAsync).
   * Another add that opened one meanwhile wins: this one's is closed and the machine's taken.
   */
  async #takeAsync(bdf: string): Promise<{ iommu: VfioBackend; fresh: boolean }> {
    if (this.#closed()) throw closedError('machine.addDeviceAsync', 'the machine', bdf);
    if (this.#iommu !== null) return { iommu: this.#iommu, fresh: false };
    const iommu = await openBackendAsync(bdf, { backend: this.#backend });
    if (this.#closed()) {
      iommu.close();
      throw closedError('machine.addDeviceAsync', 'the machine', bdf);
    }
    if (this.#iommu !== null) {
      iommu.close();
      return { iommu: this.#iommu, fresh: false };
    }
    this.#iommu = iommu;
    return { iommu, fresh: true };
  }

  /** Close the IOMMU context opened for a device that failed or was given back. */
  #drop(iommu: VfioBackend, fresh: boolean): void {
    if (fresh && this.#iommu === iommu) {
      this.#iommu = null;
      iommu.close();
    }
  }
}

/** The ioctl that pins guest RAM on `iommu`'s backend, for the errors before it. */
export function mapOp(iommu: VfioBackend): string {
  return iommu.kind === 'iommufd' ? 'IOMMU_IOAS_MAP' : 'VFIO_IOMMU_MAP_DMA';
}
