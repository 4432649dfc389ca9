import { defaultIrqchipRoutes } from './irqchip-routes';
import type { GsiRoute } from './uapi';
import type { Assignment, HasFd, Vm } from './vm';

/** An MSI message as a device is programmed with it. */
export interface MsiMessage {
  addressLo: number;
  addressHi: number;
  data: number;
}

/**
 * The interrupt wiring of a passthrough VM: one GSI route per MSI/MSI-X vector, and the vfio
 * trigger eventfd of that vector on KVM_IRQFD, so a device interrupt reaches the vCPU with no
 * JavaScript on the path.
 *
 * Masking: a masked or disabled vector has its irqfd deassigned and its route removed. A signal
 * that arrives meanwhile stays in the eventfd unless another reader (lib/pci's watcher, which then
 * sets the pending bit) drains it; one still there when the irqfd is assigned again is injected by
 * KVM at once. PciMsiRouting (pci-msi.ts) drives this class from a VfioPciDevice.
 */
export class MsiRoutes {
  readonly #vm: Vm;
  readonly #firstGsi: number;
  readonly #routes = new Map<
    string,
    { gsi: number; msg: MsiMessage; irqfd: Assignment | null; fd: number }
  >();
  readonly #free: number[] = [];
  #next: number;

  constructor(vm: Vm, firstGsi = 24) {
    this.#vm = vm;
    this.#firstGsi = firstGsi;
    this.#next = firstGsi;
  }

  /** The GSI of a vector, or undefined when it is not routed. */
  gsiOf(key: string): number | undefined {
    return this.#routes.get(key)?.gsi;
  }

  /** How many vectors are routed. */
  get size(): number {
    return this.#routes.size;
  }

  /**
   * Route vector `key` (e.g. `"0000:00:03.0 msi 0"`): `msg` null removes it (disabled or masked);
   * otherwise its route is (re)programmed and `trigger` goes to KVM_IRQFD on its GSI.
   */
  update(key: string, msg: MsiMessage | null, trigger?: HasFd): void {
    const cur = this.#routes.get(key);
    if (msg === null) {
      if (!cur) return;
      cur.irqfd?.release();
      this.#routes.delete(key);
      this.#free.push(cur.gsi);
      this.#install();
      return;
    }
    const gsi = cur?.gsi ?? this.#free.pop() ?? this.#next++;
    const fd = trigger?.fd ?? -1;
    const entry = { gsi, msg: { ...msg }, irqfd: cur?.irqfd ?? null, fd };
    this.#routes.set(key, entry);
    this.#install();
    if (entry.irqfd !== null && cur?.fd !== fd) {
      entry.irqfd.release();
      entry.irqfd = null;
    }
    if (entry.irqfd === null && trigger !== undefined) entry.irqfd = this.#vm.irqfd(trigger, gsi);
  }

  /** Remove every route and irqfd. */
  clear(): void {
    for (const r of this.#routes.values()) r.irqfd?.release();
    this.#routes.clear();
    this.#free.length = 0;
    this.#next = this.#firstGsi;
    if (!this.#vm.closed) this.#install();
  }

  // KVM_SET_GSI_ROUTING replaces the whole table: the default irqchip routes go in every one.
  #install(): void {
    const routes: GsiRoute[] = defaultIrqchipRoutes();
    for (const r of this.#routes.values()) routes.push({ gsi: r.gsi, kind: 'msi', ...r.msg });
    this.#vm.setGsiRouting(routes);
  }
}
