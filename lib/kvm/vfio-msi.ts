import { native } from '../native';
import type { VfioPciDevice } from '../pci';
import { EventFd, VFIO_PCI_MSI_IRQ_INDEX } from '../vfio';
import type { MsiRoutes } from './msi-routes';

const PCI_CAP_ID_MSI = 0x05;
const PCI_MSI_FLAGS_ENABLE = 1;
const PCI_MSI_FLAGS_64BIT = 0x80;

/**
 * Interim MSI wiring for one device, until lib/pci reports MSI changes and lib/vfio hands out
 * trigger eventfds: it follows the guest's writes to the device's MSI capability (feed it every
 * configuration write, e.g. from pciConfigIo's `onWrite`), and when the guest enables MSI it
 * creates an eventfd, gives it to vfio (VFIO_DEVICE_SET_IRQS, vector 0) and routes it through
 * {@link MsiRoutes}; disabling undoes both. Single-vector MSI only, as the lab's edu uses.
 */
export class VfioMsiSeam implements Disposable {
  readonly #dev: VfioPciDevice;
  readonly #routes: MsiRoutes;
  readonly #cap: number;
  #eventfd: EventFd | null = null;
  #enabled = false;

  constructor(dev: VfioPciDevice, routes: MsiRoutes) {
    const cap = dev.capabilities.find((c) => !c.extended && c.id === PCI_CAP_ID_MSI);
    if (cap === undefined) throw new RangeError(`${dev.bdf} has no MSI capability`);
    this.#dev = dev;
    this.#routes = routes;
    this.#cap = cap.offset;
  }

  /** The MSI capability's offset in configuration space. */
  get capOffset(): number {
    return this.#cap;
  }

  /** The trigger eventfd while MSI is enabled. */
  get eventfd(): EventFd | null {
    return this.#eventfd;
  }

  /**
   * Follow one configuration write of `value`; only writes inside the MSI capability matter. The
   * enable bit is taken from the written value: vfio-pci keeps it clear in the config space it
   * shows until MSI is enabled through VFIO_DEVICE_SET_IRQS (QEMU emulates the bit for the same
   * reason). Address and data are read back, as vfio-pci stores them.
   */
  configWritten(offset: number, size: number, value: number): void {
    if (offset + size <= this.#cap || offset >= this.#cap + 24) return;
    const at = this.#cap + 2 - offset;
    if (at >= 0 && at < size) this.#enabled = ((value >>> (8 * at)) & PCI_MSI_FLAGS_ENABLE) !== 0;
    const flags = this.#dev.configRead(this.#cap + 2, 2);
    const enabled = this.#enabled;
    const key = `${this.#dev.bdf} msi 0`;
    if (!enabled) {
      this.#disable(key);
      return;
    }
    const is64 = (flags & PCI_MSI_FLAGS_64BIT) !== 0;
    const msg = {
      addressLo: this.#dev.configRead(this.#cap + 4, 4),
      addressHi: is64 ? this.#dev.configRead(this.#cap + 8, 4) : 0,
      data: this.#dev.configRead(this.#cap + (is64 ? 0x0c : 0x08), 2),
    };
    if (this.#eventfd === null) {
      const efd = EventFd.open();
      try {
        native.vfioSetIrqEventfds(this.#deviceFd(), VFIO_PCI_MSI_IRQ_INDEX, 0, [efd.fd]);
      } catch (e) {
        efd.close();
        throw e;
      }
      this.#eventfd = efd;
    }
    this.#routes.update(key, msg, this.#eventfd);
  }

  /** Disable MSI on the device and remove its route. Idempotent. */
  close(): void {
    this.#enabled = false;
    this.#disable(`${this.#dev.bdf} msi 0`);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #disable(key: string): void {
    this.#routes.update(key, null);
    if (this.#eventfd === null) return;
    const fd = this.#deviceFd();
    if (fd >= 0) native.vfioSetIrqEventfds(fd, VFIO_PCI_MSI_IRQ_INDEX, 0, []);
    this.#eventfd.close();
    this.#eventfd = null;
  }

  #deviceFd(): number {
    const fd = (this.#dev.device as { fd?: unknown }).fd;
    if (typeof fd !== 'number')
      throw new TypeError(`${this.#dev.bdf}: MSI wiring needs a real VFIO device (with an fd)`);
    return fd;
  }
}
