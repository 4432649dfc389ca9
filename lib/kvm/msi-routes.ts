import { callWarning } from '../base/events';
import { Outstanding } from '../base/outstanding';
import { defaultIrqchipRoutes } from './irqchip-routes';
import type { GsiRoute } from './uapi';
import type { Assignment, HasFd, Vm } from './vm';

/** An MSI message as a device is programmed with it. */
export interface MsiMessage {
  /** Low 32 bits of the message address. */
  addressLo: number;
  /** High 32 bits of the message address (0 for a 32-bit address). */
  addressHi: number;
  /** The message data. */
  data: number;
}

/** Where a queued MsiRoutes reports a routing table KVM refused (a vector's own failure: its key). */
export const GSI_TABLE = 'GSI routing table';

/** Options of {@link MsiRoutes}. */
export interface MsiRoutesOptions {
  /** The first GSI given to a vector (default 24: the IOAPIC's pins come first). */
  firstGsi?: number;
  /**
   * Give KVM each routing table on the libuv thread pool (Vm.setGsiRoutingAsync), in order, and
   * assign the new irqfds once their table is in, instead of at once: KVM waits for an SRCU grace
   * period per table, milliseconds under nested virtualization. What KVM refuses then goes to this
   * function, with the route's key (or {@link GSI_TABLE}), instead of being thrown;
   * {@link MsiRoutes.pending} is what the vCPU that changed a vector waits for.
   */
  queued?: (error: unknown, where: string) => void;
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
  /** Inside {@link batch}: the table is installed, and irqfds assigned, once at its end. */
  #batching = 0;
  #dirty = false;
  /** What runs once the next table is in: each new irqfd, with its route's key. */
  readonly #afterInstall: { key: string; op: () => void }[] = [];

  readonly #queued: ((error: unknown, where: string) => void) | null;
  readonly #outstanding = new Outstanding();

  /** `opts` as a number: the first GSI (the older form). */
  constructor(vm: Vm, opts: number | MsiRoutesOptions = {}) {
    const o = typeof opts === 'number' ? { firstGsi: opts } : opts;
    this.#vm = vm;
    this.#firstGsi = o.firstGsi ?? 24;
    this.#next = this.#firstGsi;
    this.#queued = o.queued ?? null;
  }

  /** Queued mode: resolves once every table and irqfd asked for so far is in KVM (or refused); else null. */
  get pending(): Promise<void> | null {
    return this.#outstanding.pending;
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
    if (this.#batching > 0) {
      this.#apply(key, msg, trigger);
      return;
    }
    this.batch(() => this.#apply(key, msg, trigger));
  }

  /**
   * Run `fn`, whose updates (a guest enabling N MSI-X vectors, say) reach KVM as one
   * KVM_SET_GSI_ROUTING at the end, each new irqfd assigned after it. Nested batches join the
   * outer one. Throws the first failure, after the table was installed and every irqfd tried.
   */
  batch<T>(fn: () => T): T {
    this.#batching++;
    let result: T;
    try {
      result = fn();
    } finally {
      if (--this.#batching === 0) this.#flush();
    }
    return result;
  }

  #flush(): void {
    if (this.#queued !== null) return this.#flushQueued(this.#queued);
    const errors: unknown[] = [];
    if (this.#dirty) {
      this.#dirty = false;
      try {
        this.#install();
      } catch (e) {
        errors.push(e);
      }
    }
    for (const { op } of this.#afterInstall.splice(0)) {
      try {
        op();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length > 0) throw errors[0];
  }

  /** The queued form of #flush: the table on the thread pool, then its irqfds, failures to `report`. */
  #flushQueued(report: (error: unknown, where: string) => void): void {
    const after = this.#afterInstall.splice(0);
    const installed = this.#dirty ? this.#installAsync(report) : Promise.resolve();
    this.#dirty = false;
    if (after.length === 0) return;
    const done = this.#outstanding.begin();
    void installed.then(() => {
      try {
        for (const { key, op } of after) {
          try {
            op();
          } catch (e) {
            if (!this.#vm.closed) callWarning('MsiRoutes: the queued option', report, e, key);
          }
        }
      } finally {
        done();
      }
    });
  }

  /** The table on the thread pool; settles (never rejects) once KVM took or refused it. */
  #installAsync(report: (error: unknown, where: string) => void): Promise<void> {
    if (this.#vm.closed) return Promise.resolve();
    const done = this.#outstanding.begin();
    let sent: Promise<void>;
    try {
      sent = this.#vm.setGsiRoutingAsync(this.#table());
    } catch (e) {
      sent = Promise.reject(e);
    }
    return sent.then(done, (e: unknown) => {
      done();
      if (!this.#vm.closed) callWarning('MsiRoutes: the queued option', report, e, GSI_TABLE);
    });
  }

  #apply(key: string, msg: MsiMessage | null, trigger?: HasFd): void {
    const cur = this.#routes.get(key);
    if (msg === null) {
      if (!cur) return;
      cur.irqfd?.release();
      this.#routes.delete(key);
      this.#free.push(cur.gsi);
      this.#dirty = true;
      return;
    }
    const gsi = cur?.gsi ?? this.#free.pop() ?? this.#next++;
    const fd = trigger?.fd ?? -1;
    const entry = { gsi, msg: { ...msg }, irqfd: cur?.irqfd ?? null, fd };
    this.#routes.set(key, entry);
    this.#dirty = true;
    if (entry.irqfd !== null && cur?.fd !== fd) {
      entry.irqfd.release();
      entry.irqfd = null;
    }
    if (entry.irqfd === null && trigger !== undefined) {
      // After the table is in: an irqfd on a GSI with no route yet would drop what arrives first.
      this.#afterInstall.push({
        key,
        op: () => {
          if (this.#routes.get(key) === entry && entry.irqfd === null)
            entry.irqfd = this.#vm.irqfd(trigger, gsi);
        },
      });
    }
  }

  /** Remove every route and irqfd. */
  clear(): void {
    for (const r of this.#routes.values()) r.irqfd?.release();
    this.#routes.clear();
    this.#free.length = 0;
    this.#next = this.#firstGsi;
    this.#afterInstall.length = 0;
    this.#dirty = false;
    if (this.#vm.closed) return;
    if (this.#queued !== null) void this.#installAsync(this.#queued);
    else this.#install();
  }

  #install(): void {
    this.#vm.setGsiRouting(this.#table());
  }

  // KVM_SET_GSI_ROUTING replaces the whole table: the default irqchip routes go in every one.
  #table(): GsiRoute[] {
    const routes: GsiRoute[] = defaultIrqchipRoutes();
    for (const r of this.#routes.values()) routes.push({ gsi: r.gsi, kind: 'msi', ...r.msg });
    return routes;
  }
}
