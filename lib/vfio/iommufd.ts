/**
 * An iommufd (`/dev/iommu`): the context that IO address spaces (Ioas), hardware page tables (Hwpt)
 * and bound device cdevs live in. The modern VFIO uAPI's IOMMU side, beside the legacy Container.
 */
import { ArgTypeError } from '../base/error';
import { native, type NativeHandle } from '../native';
import { parseHwInfo, type IommuHwInfo } from './iommufd-uapi';
import { Ioas } from './ioas';
import { iommufdHandle, rawIommufdHandle, setIommufdHandle, type IommufdHandle } from './iommufd-handle';

// Tests take the handle from here, as before the table had a file of its own.
export { iommufdHandle };

/**
 * An open `/dev/iommu`. Allocate IO address spaces with {@link Iommufd.allocIoas}, bind device
 * cdevs to it (`openCdevDevice`), attach them to an IOAS. Closing it unmaps what its IOASes
 * mapped and destroys them; it is also released when garbage-collected or when its thread exits.
 */
export class Iommufd implements IommufdHandle {
  /** The node this iommufd was opened from. */
  readonly path: string;
  #closed = false;
  readonly #ioases = new Set<Ioas<Iommufd>>();

  private constructor(handle: NativeHandle, path: string) {
    setIommufdHandle(this, handle);
    this.path = path;
  }

  /**
   * Open the iommufd.
   * @throws VfioError ENOENT (the kernel has no IOMMUFD), EACCES (permissions), each with a hint
   */
  static open(path = '/dev/iommu'): Iommufd {
    if (typeof path !== 'string') throw new ArgTypeError('Iommufd.open: path must be a string');
    return new Iommufd(native.openFd(path), path);
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The iommufd's fd (-1 once closed). */
  get fd(): number {
    return this.#closed ? -1 : native.fdOf(rawIommufdHandle(this)!);
  }

  /** IOMMU_IOAS_ALLOC: a new, empty IO address space with every IOVA usable until devices attach. */
  allocIoas(): Ioas<Iommufd> {
    const id = native.iommufdIoasAlloc(iommufdHandle(this, 'IOMMU_IOAS_ALLOC'));
    const ioas = Ioas._create<Iommufd>(this, id);
    this.#ioases.add(ioas);
    return ioas;
  }

  /** The IOASes allocated here and not closed. */
  ioases(): Ioas<Iommufd>[] {
    return [...this.#ioases].filter((a) => !a.closed);
  }

  /**
   * IOMMU_GET_HW_INFO: the IOMMU behind bound device `devId` (a Device's `iommufdDevId`): its type,
   * its capabilities (dirty tracking) and, for Intel VT-d, its cap and ecap registers.
   */
  hwInfo(devId: number): IommuHwInfo {
    return parseHwInfo(native.iommufdGetHwInfo(iommufdHandle(this, 'IOMMU_GET_HW_INFO'), devId));
  }

  /** IOMMU_DESTROY of an object of this iommufd. @internal */
  _destroy(id: number): void {
    native.iommufdDestroy(iommufdHandle(this, 'IOMMU_DESTROY'), id);
  }

  /**
   * Close: each IOAS unmaps what it mapped and is destroyed (an IOAS a device still holds is freed
   * with it), then the fd. Idempotent; later use throws VfioError `'ECLOSED'`. The first failure is
   * thrown once the fd is closed.
   */
  close(): void {
    if (this.#closed) return;
    let first: unknown;
    for (const ioas of this.#ioases) {
      try {
        ioas._closeWithIommufd();
      } catch (e) {
        first ??= e;
      }
    }
    this.#ioases.clear();
    this.#closed = true;
    const h = rawIommufdHandle(this);
    if (h !== undefined) native.closeFd(h);
    if (first !== undefined) throw first;
  }

  /** Same as {@link Iommufd.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
