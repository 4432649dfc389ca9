import { callWarning } from '../base/events';
import { Outstanding } from '../base/outstanding';
import { native, type NativeHandle } from '../native';
import type { IrqDevice } from './irq';
import type { IrqInfo } from './uapi';

/** What an {@link IrqChangeQueue} works on: lib/vfio's Device. */
export interface QueuedIrqDevice {
  readonly bdf: string;
  irqInfo(index: number): IrqInfo;
  /** The open device's handle; throws the closed error for `op` once it is closed. */
  handle(op: string): NativeHandle;
}

/**
 * The interrupt changes of one device's DeviceIrqs (every VFIO_DEVICE_SET_IRQS they make: enable,
 * disable, unmask, a resample eventfd) on the libuv thread pool instead of at once, each starting
 * only once the one before it has settled. Enabling MSI-X or INTx asks the kernel for host
 * interrupts and, behind an IOMMU with interrupt remapping, for their remapping entries: tens of
 * milliseconds under nested virtualization, which a VMM's event loop must not wait for.
 *
 * A change is checked and its eventfds duplicated when it is made (the caller may close them at
 * once); a refusal by the kernel goes to `onError` instead of being thrown. {@link pending} is
 * what a vCPU whose access made changes waits for. From Device.queueIrqChanges.
 * @internal
 */
export class IrqChangeQueue implements IrqDevice {
  readonly #device: QueuedIrqDevice;
  readonly #onError: (error: unknown) => void;
  readonly #outstanding = new Outstanding();

  constructor(device: QueuedIrqDevice, onError: (error: unknown) => void) {
    this.#device = device;
    this.#onError = onError;
  }

  get bdf(): string {
    return this.#device.bdf;
  }

  irqInfo(index: number): IrqInfo {
    return this.#device.irqInfo(index);
  }

  setIrqs(index: number, flags: number, start: number, count: number, data?: Uint8Array): void {
    const h = this.#device.handle('VFIO_DEVICE_SET_IRQS');
    const made = native.vfioSetIrqsAsync(h, index, flags, start, count, data);
    const done = this.#outstanding.begin();
    made.then(done, (e: unknown) => {
      done();
      callWarning('queueIrqChanges: onError', this.#onError, e);
    });
  }

  /** Resolves once every change made so far is in the kernel (or refused); null when none is in flight. */
  get pending(): Promise<void> | null {
    return this.#outstanding.pending;
  }
}
