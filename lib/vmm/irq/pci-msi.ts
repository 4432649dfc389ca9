import { ArgTypeError } from '../../base/error';
import type { GuestErrorSink } from '../../base/guest-error';
import type { PciInterruptListener, PciIrqChange, PciIrqType, VfioPciDevice } from '../../pci';
import type { MsiMessage } from '../../kvm';
import { msiRouteFailure, RouteFailures } from './route-failures';

/** What {@link PciMsiRouting} needs of a device: lib/pci's VfioPciDevice. Fakes implement it. */
export type MsiRoutingDevice = Pick<VfioPciDevice, 'bdf' | 'irq' | 'msix'> &
  Partial<Pick<VfioPciDevice, 'guestErrors'>>;

/** What {@link PciMsiRouting} drives: lib/kvm's MsiRoutes and the VM's KVM_SIGNAL_MSI. */
export interface MsiRoutingTarget {
  /** See {@link MsiRoutes.update}. */
  update(key: string, msg: MsiMessage | null, trigger?: { readonly fd: number }): void;
  /** Run `fn`'s updates as one change of the routing table (MsiRoutes.batch), where there is one. */
  batch?<T>(fn: () => T): T;
  /** See {@link Vm.signalMsi}. */
  signalMsi(addressLo: number, addressHi: number, data: number): boolean;
}

/** Options of {@link PciMsiRouting}. */
export interface PciMsiRoutingOptions {
  /**
   * Where a route, an irqfd or an injection KVM refused is reported (source `irq`, kind
   * `irq-route-failed`; counted in {@link PciMsiRouting.errors} too), never thrown: the guest's
   * setup caused it. Default: the device's sink (`dev.guestErrors`), else one of the routing's own.
   */
  guestErrors?: GuestErrorSink;
}

interface Applied {
  lo: number;
  hi: number;
  data: number;
  fd: number;
}

/**
 * PciMsiRouting: a passthrough device's MSI/MSI-X vectors on KVM, following the guest's setup as
 * lib/pci virtualizes it. Every enabled, unmasked vector has a GSI route with the guest's message
 * and the host trigger eventfd of that vector (`dev.irq.host.fds`) on KVM_IRQFD, so a device
 * interrupt reaches the vCPU with no JavaScript on the path.
 *
 * Masking follows QEMU's KVM MSI path: a masked vector (or all of MSI-X under the function mask)
 * has its irqfd deassigned and its route removed. The kernel then wakes lib/pci's own watcher on
 * the trigger eventfd, which sets the vector's pending bit; while the irqfd is attached KVM
 * consumes the eventfd first and the watcher never sees it. On unmask the irqfd is assigned again
 * (KVM injects at once if the eventfd was signalled in between), and the pending bit lib/pci
 * delivers to its `interrupt` listeners is injected here through KVM_SIGNAL_MSI. The same path
 * carries an interrupt that reaches the watcher in the instant between a mode switch and the
 * irqfd assignment.
 *
 * INTx is routed by {@link PciIntxRouting} (an IOAPIC pin and a resample eventfd). Pass `routes.update`
 * and `vm.signalMsi` bound together, e.g. `{ update: (...a) => routes.update(...a), signalMsi:
 * (...a) => vm.signalMsi(...a) }`, or any object with both.
 */
export class PciMsiRouting implements Disposable {
  readonly #dev: MsiRoutingDevice;
  readonly #target: MsiRoutingTarget;
  readonly #failures: RouteFailures;
  readonly #applied = new Map<string, Applied>();
  readonly #onChange = (c: PciIrqChange): void => this.#changed(c);
  readonly #onInterrupt: PciInterruptListener = (v, _count, t) => this.#interrupt(v, t);
  readonly #removeMsix: (() => void) | null;
  #listening = false;
  #injected = 0;
  #closed = false;

  constructor(dev: MsiRoutingDevice, target: MsiRoutingTarget, opts: PciMsiRoutingOptions = {}) {
    if (typeof target?.update !== 'function' || typeof target.signalMsi !== 'function') {
      throw new ArgTypeError('target must have update() and signalMsi() (MsiRoutes and Vm)');
    }
    this.#failures = new RouteFailures(dev.bdf, opts.guestErrors, dev.guestErrors);
    this.#dev = dev;
    this.#target = target;
    dev.irq.on('change', this.#onChange);
    // lib/pci reports no change for the MSI-X function mask: it is read from the table's own events.
    this.#removeMsix = dev.msix?.onChange((e) => e.kind === 'control' && this.#sync()) ?? null;
    this.#modeChanged();
  }

  /** Vectors routed to KVM with an irqfd right now. */
  get routed(): number {
    return this.#applied.size;
  }

  /** Pending interrupts injected through KVM_SIGNAL_MSI (on unmask, or before the irqfd was up). */
  get injected(): number {
    return this.#injected;
  }

  /** Guest-caused KVM failures reported to the sink. */
  get errors(): number {
    return this.#failures.count;
  }

  /** The route key of one vector, as MsiRoutes knows it. */
  key(type: 'msi' | 'msix', vector: number): string {
    return `${this.#dev.bdf} ${type} ${vector}`;
  }

  /** Removes every route and irqfd this made and stops following the device. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dev.irq.off('change', this.#onChange);
    this.#removeMsix?.();
    this.#listen(false);
    this.#dropAll();
  }

  /** Same as {@link PciMsiRouting.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #changed(c: PciIrqChange): void {
    if (this.#closed) return;
    if (c.kind === 'mode') this.#modeChanged();
    else this.#sync();
  }

  #modeChanged(): void {
    // The old host eventfds are closed by now and their numbers may come back for the new ones, so
    // an irqfd is never kept across a mode switch. The old routes' removal and the new ones are one
    // change of the routing table.
    this.#batched(() => {
      this.#dropAll();
      const mode = this.#dev.irq.mode;
      this.#listen(mode === 'msi' || mode === 'msix');
      this.#sync();
    });
  }

  /** Runs `fn`'s updates as one routing change where the target batches (nested ones join it). */
  #batched(fn: () => void): void {
    const batch = this.#target.batch;
    if (batch === undefined) fn();
    else this.#guard(`${this.#dev.bdf} ${this.#dev.irq.mode}`, () => batch.call(this.#target, fn));
  }

  /** Only while MSI or MSI-X is on: a listener in 'none' would make lib/pci wire INTx. */
  #listen(on: boolean): void {
    if (on === this.#listening) return;
    this.#listening = on;
    if (on) this.#dev.irq.on('interrupt', this.#onInterrupt);
    else this.#dev.irq.off('interrupt', this.#onInterrupt);
  }

  /** Brings every vector's route and irqfd to what the guest and the host have now. */
  #sync(): void {
    if (this.#closed) return;
    const irq = this.#dev.irq;
    const mode = irq.mode;
    const want = new Map<string, Applied>();
    if (mode === 'msi' || mode === 'msix') {
      const fds = irq.host?.fds ?? [];
      const fnMasked = mode === 'msix' && (this.#dev.msix?.functionMasked ?? false);
      const count =
        mode === 'msi' ? (irq.msi?.enabled ? irq.msi.vectors : 0) : this.#dev.msix?.enabled ? fds.length : 0;
      for (let v = 0; v < count && v < fds.length; v++) {
        if (fds[v] < 0 || fnMasked) continue;
        const m = irq.message(mode, v);
        if (m.masked) continue;
        want.set(this.key(mode, v), {
          lo: Number(m.address & 0xffff_ffffn),
          hi: Number((m.address >> 32n) & 0xffff_ffffn),
          data: m.data,
          fd: fds[v],
        });
      }
    }
    const apply = (): void => {
      for (const key of [...this.#applied.keys()]) if (!want.has(key)) this.#drop(key);
      for (const [key, w] of want) {
        const cur = this.#applied.get(key);
        if (cur && cur.lo === w.lo && cur.hi === w.hi && cur.data === w.data && cur.fd === w.fd) continue;
        this.#guard(key, () => {
          this.#target.update(key, { addressLo: w.lo, addressHi: w.hi, data: w.data }, { fd: w.fd });
          this.#applied.set(key, w);
        });
      }
    };
    // Every vector's change in one routing update: a guest enabling N vectors costs one
    // KVM_SET_GSI_ROUTING, not N. What the batch's end fails at is reported once, for the device.
    this.#batched(apply);
  }

  /** An interrupt lib/pci delivered to JS: a pending bit released on unmask, or an early one. */
  #interrupt(vector: number, type: PciIrqType): void {
    if (this.#closed || type === 'intx' || type !== this.#dev.irq.mode) return;
    const key = this.key(type, vector);
    this.#guard(key, () => {
      const m = this.#dev.irq.message(type, vector);
      const a = m.address;
      this.#target.signalMsi(Number(a & 0xffff_ffffn), Number((a >> 32n) & 0xffff_ffffn), m.data);
      this.#injected++;
    });
  }

  #drop(key: string): void {
    this.#applied.delete(key);
    this.#guard(key, () => this.#target.update(key, null));
  }

  #dropAll(): void {
    if (this.#applied.size === 0) return;
    this.#batched(() => {
      for (const key of [...this.#applied.keys()]) this.#drop(key);
    });
  }

  #guard(key: string, fn: () => void): void {
    this.#failures.run(msiRouteFailure(key), fn);
  }
}
