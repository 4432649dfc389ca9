import { ArgRangeError, ArgTypeError } from '../../base/error';
import type { GuestErrorSink } from '../../base/guest-error';
import type { HostIrq, PciIrqChange, VfioPciDevice } from '../../pci';
import { EventFd } from '../../base';
import type { Assignment, HasFd, IrqfdOptions } from '../../kvm';
import { RouteFailures } from './route-failures';

/** What {@link PciIntxRouting} needs of a device: lib/pci's VfioPciDevice. Fakes implement it. */
export type IntxRoutingDevice = Pick<VfioPciDevice, 'bdf' | 'irq'> &
  Partial<Pick<VfioPciDevice, 'guestErrors'>>;

/** What {@link PciIntxRouting} drives: lib/kvm's Vm (KVM_IRQFD). */
export interface IntxRoutingTarget {
  /** See {@link Vm.irqfd}. */
  irqfd(eventfd: HasFd, gsi: number, opts: IrqfdOptions): Assignment;
}

/** Options of {@link PciIntxRouting}. */
export interface PciIntxRoutingOptions {
  /**
   * Where an irqfd KVM refused to assign or release for the guest's setup is reported (source
   * `irq`, kind `irq-route-failed`; counted in {@link PciIntxRouting.errors} too), never thrown.
   * VFIO failures (enabling INTx, the unmask) are lib/pci's to report. Default: the device's sink
   * (`dev.guestErrors`), else one of the routing's own.
   */
  guestErrors?: GuestErrorSink;
  /**
   * The resample eventfd, if the caller keeps its own (it stays the caller's and must outlive
   * this). By default one is created here and closed by {@link PciIntxRouting.close}.
   */
  resample?: HasFd;
}

/**
 * PciIntxRouting: a passthrough device's INTx on an IOAPIC pin of KVM's in-kernel irqchip, as
 * QEMU's vfio_intx_enable_kvm wires it, with no JavaScript on the interrupt path:
 *
 * - the host trigger eventfd (`dev.irq.host.fds[0]`) is a KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE on
 *   `gsi`: a device interrupt raises the level-triggered line in the kernel (VFIO has masked the
 *   device's INTx meanwhile);
 * - the resample eventfd, which KVM signals when the guest EOIs the line (after lowering it), is
 *   VFIO's INTx unmask eventfd (given to lib/pci through `dev.irq.routeIntx`): the device's INTx is
 *   unmasked in the kernel, and an interrupt still pending fires again at once.
 *
 * lib/pci stays the owner of the host mode: this asks it to keep INTx enabled while the guest has
 * neither MSI nor MSI-X on, and follows its 'mode' changes. Each time the host INTx is enabled
 * (at the start, after a guest-visible reset, after the guest turns MSI or MSI-X off again) the
 * irqfd is assigned to the new trigger eventfd; when INTx goes off it is released, which also
 * lowers the line.
 *
 * No INTx is lost in the gap before the irqfd exists. One the device raises between the enable and
 * the assignment waits in the eventfd, and KVM_IRQFD injects it when it attaches (lib/pci's watcher
 * may read it too: a second look at a level). One that lib/pci's watcher took before any routing
 * left INTx masked at VFIO, but routing enables the host INTx anew, and a device still asserting
 * fires again at once. After each assignment INTx is also unmasked once at VFIO, as QEMU does
 * after wiring KVM, so a line masked earlier is sent to KVM if the device still asserts it.
 *
 * The guest's INTx-disable bit in the command register reaches the device's config space, where
 * vfio-pci masks INTx itself (and sends a pending one when the bit clears), so nothing in
 * JavaScript holds the line. lib/pci's own hold of it only concerns its 'interrupt' listeners.
 *
 * `gsi` must be an IOAPIC input of the VM's routing (16-23 for PCI, see lib/vmm's pciIntxGsi).
 */
export class PciIntxRouting implements Disposable {
  /** The GSI (IOAPIC input) the device's INTx is wired to, as given to the constructor. */
  readonly gsi: number;
  readonly #dev: IntxRoutingDevice;
  readonly #vm: IntxRoutingTarget;
  readonly #failures: RouteFailures;
  readonly #resample: HasFd;
  readonly #ownResample: EventFd | null;
  readonly #withdraw: () => void;
  readonly #onChange = (c: PciIrqChange): void => {
    if (c.kind === 'mode') this.#sync();
  };
  #assignment: Assignment | null = null;
  #attached: HostIrq | null = null;
  #closed = false;

  constructor(dev: IntxRoutingDevice, vm: IntxRoutingTarget, gsi: number, opts: PciIntxRoutingOptions = {}) {
    if (typeof vm?.irqfd !== 'function') throw new ArgTypeError('target must have irqfd() (a Vm)');
    if (!Number.isInteger(gsi) || gsi < 0 || gsi > 0xffffffff) {
      throw new ArgRangeError(`INTx GSI ${String(gsi)} is not an integer in [0, 0xffffffff]`);
    }
    const failures = new RouteFailures(dev.bdf, opts.guestErrors, dev.guestErrors);
    if (opts.resample !== undefined && !(Number.isInteger(opts.resample?.fd) && opts.resample.fd >= 0)) {
      throw new ArgTypeError('resample must be an open object with an fd (an EventFd)');
    }
    if (dev.irq.pin === 0) {
      throw new ArgRangeError(`${dev.bdf} has no INTx pin (interrupt pin register 0): nothing to route`);
    }
    this.#failures = failures;
    this.gsi = gsi;
    this.#dev = dev;
    this.#vm = vm;
    this.#ownResample = opts.resample === undefined ? EventFd.open() : null;
    this.#resample = opts.resample ?? this.#ownResample!;
    try {
      dev.irq.on('change', this.#onChange);
      // Wires the host INTx (or enables it again with the resample eventfd), telling it as a change.
      this.#withdraw = dev.irq.routeIntx({ resample: this.#resample.fd });
    } catch (e) {
      dev.irq.off('change', this.#onChange);
      this.#ownResample?.close();
      throw e;
    }
    // Already in MSI or MSI-X: INTx is wired, and told, when the guest turns them off.
    this.#sync();
  }

  /** Whether the INTx trigger is on KVM_IRQFD right now. */
  get wired(): boolean {
    return this.#assignment !== null;
  }

  /** The resample eventfd: KVM signals it on the guest's EOI, VFIO unmasks INTx on it. */
  get resampleFd(): number {
    return this.#resample.fd;
  }

  /** Guest-caused KVM failures reported to the sink. */
  get errors(): number {
    return this.#failures.count;
  }

  /**
   * Releases the irqfd, withdraws the request for INTx from lib/pci (which disables INTx on the host
   * unless 'interrupt' listeners want it) and closes the resample eventfd created here. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dev.irq.off('change', this.#onChange);
    this.#release();
    // The irqfd is gone before VFIO drops the unmask eventfd, and both before it is closed.
    this.#guard(() => this.#withdraw());
    this.#ownResample?.close();
  }

  /** Same as {@link PciIntxRouting.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Attaches to the host INTx that lib/pci has now, or releases when there is none. */
  #sync(): void {
    if (this.#closed) return;
    const irq = this.#dev.irq;
    const host = irq.mode === 'intx' ? irq.host : null;
    // The same host keeps its eventfd across a recovery reset's disable and enable: the irqfd holds
    // (or, if KVM refused it, waits for the next enable, which brings a new host).
    if (host === this.#attached) return;
    this.#release();
    // No host INTx while the mode says INTx: lib/pci failed to enable it and reported that itself.
    if (host === null || host.fds[0] === undefined || host.fds[0] < 0) return;
    this.#attached = host;
    const attached = this.#guard(() => {
      this.#assignment = this.#vm.irqfd({ fd: host.fds[0] }, this.gsi, { resample: this.#resample });
    });
    if (attached) this.#guard(() => irq.eoi());
  }

  #release(): void {
    const a = this.#assignment;
    this.#assignment = null;
    this.#attached = null;
    if (a) this.#guard(() => a.release());
  }

  #guard(fn: () => void): boolean {
    return this.#failures.run(
      {
        where: `${this.#dev.bdf} intx`,
        message: (why) => `KVM refused the INTx irqfd of ${this.#dev.bdf} on GSI ${this.gsi}: ${why}`,
        hint: 'the INTx line stays unrouted until the guest changes its interrupt mode again',
      },
      fn,
    );
  }
}
