/**
 * PciInterrupts, one state machine over ~500 lines on purpose: the guest's INTx, MSI and MSI-X
 * setup and the host's one enabled IRQ index switch together (enabling one mode tears the other
 * down on the host, REQ rides beside them), so the transitions stay in one class where each can see
 * the others. The shapes it exchanges with its users are in interrupt-types.ts; the MSI and MSI-X
 * capability emulation is in msi.ts and msix.ts; routing to a hypervisor is lib/vmm/irq's.
 */
import { closedError } from '../base/error';
import { EventEmitter } from 'node:events';
import { ArgRangeError, ArgTypeError } from '../base/error';
import type { IrqInfo } from '../vfio';
import {
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
} from '../vfio/uapi';
import type { EmulatedConfig, PciCapability } from './config';
import {
  PCI_CAP_ID_MSI,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_INTERRUPT_PIN,
  PCI_MSI_FLAGS,
} from './constants';
import { Msi, msiLayout } from './msi';
import type { Msix, MsixEvent } from './msix';
import { type DeviceReporter, isVfioError } from './report';
import type { VfioDeviceLike } from './types';
import {
  isIrqCapable,
  type HostIrq,
  type IntxRouteRequest,
  type IrqCapableDevice,
  type PciInterruptListener,
  type PciIrqChange,
  type PciIrqType,
} from './interrupt-types';

const INTX = VFIO_PCI_INTX_IRQ_INDEX;
const MSI = VFIO_PCI_MSI_IRQ_INDEX;
const MSIX = VFIO_PCI_MSIX_IRQ_INDEX;
const REQ = VFIO_PCI_REQ_IRQ_INDEX;

/** What the device gives its interrupt layer. @internal */
export interface PciInterruptsContext {
  readonly bdf: string;
  readonly device: VfioDeviceLike;
  readonly emu: EmulatedConfig;
  readonly capabilities: readonly PciCapability[];
  readonly msix: Msix | null;
  readonly reporter: DeviceReporter;
  /** The command register as the guest last wrote it. */
  command(): number;
  /** One read of the device's own configuration space. */
  phys(offset: number, size: 1 | 2 | 4): number;
}

/** The events of {@link PciInterrupts}. */
export type PciInterruptsEvents = {
  /** An interrupt for the guest: the vector, how many were coalesced, and the mode it came in. */
  interrupt: Parameters<PciInterruptListener>;
  /** The guest changed its interrupt setup. */
  change: [PciIrqChange];
  /** The host asks for the device back (REQ): answer it by closing the device. */
  req: [];
};

/**
 * PciInterrupts: the guest's interrupt setup (INTx, MSI, MSI-X) mirrored on the host, as QEMU's
 * vfio-pci does it. From `VfioPciDevice.irq`.
 *
 * - The guest enabling MSI or MSI-X in its control register enables that many vectors on the host
 *   (VFIO_DEVICE_SET_IRQS with one eventfd each); MSI-X grows as the guest unmasks higher vectors.
 * - Per-vector masking is emulated (the kernel cannot mask MSI/MSI-X): an interrupt on a masked
 *   vector sets its bit in the emulated PBA (MSI-X) or pending register (MSI), and is delivered when
 *   the guest unmasks it.
 * - INTx is wired once a listener subscribes, or a router asks for it ({@link routeIntx}); the
 *   command register's INTx-disable bit holds the line back, and {@link eoi} unmasks it after the
 *   guest serviced it (or the router's resample eventfd does, in the kernel).
 * - The REQ interrupt (the host wants the device back, e.g. someone unbinds it from vfio-pci) is the
 *   'req' event: answer it by closing the device.
 *
 * Interrupts keep the process alive by default ({@link unref} changes it); REQ never does.
 * Host failures while following the guest are reported as `device-error` (reason `irq`), never thrown.
 */
export class PciInterrupts extends EventEmitter<PciInterruptsEvents> {
  /** The emulated MSI capability, or null when the device has none. */
  readonly msi: Msi | null;
  /** The interrupt pin (1..4 for INTA..INTD), 0 when the device has no INTx. */
  readonly pin: number;
  readonly #ctx: PciInterruptsContext;
  #mode: PciIrqType | 'none' = 'none';
  #host: HostIrq | null = null;
  #req: HostIrq | null = null;
  /** The INTx router's request, while one holds (see routeIntx). */
  #intxRoute: IntxRouteRequest | null = null;
  #refed = true;
  #intxHeld = false;
  #msiState: ReturnType<Msi['snapshot']> | null = null;
  #removeMsix: (() => void) | null = null;
  #closed = false;

  /** @internal built by VfioPciDevice */
  constructor(ctx: PciInterruptsContext) {
    super();
    this.#ctx = ctx;
    // Subscribing has effects: the first 'interrupt' listener wires INTx, a 'req' listener enables
    // the host's REQ interrupt; the last 'interrupt' listener leaving unwires INTx again.
    const self = this as EventEmitter;
    self.on('newListener', (event: string) => {
      if (event !== 'interrupt' && event !== 'req') return;
      this.#checkOpen();
      if (event === 'interrupt' && this.#mode === 'none') this.#enterIntx();
      if (event === 'req') this.#enableReq();
    });
    self.on('removeListener', (event: string) => {
      if (event === 'interrupt' && !this.#wantsIntx() && this.#mode === 'intx' && !this.#closed) {
        this.#switch('none', 0);
      }
    });
    this.pin = ctx.phys(PCI_INTERRUPT_PIN, 1);
    const cap = ctx.capabilities.find((c) => !c.extended && c.id === PCI_CAP_ID_MSI);
    if (cap) {
      const flags = ctx.phys(cap.offset + PCI_MSI_FLAGS, 2);
      this.msi = new Msi(msiLayout(cap.offset, flags), flags, ctx.emu);
      this.#msiState = this.msi.snapshot();
    } else {
      this.msi = null;
    }
    if (ctx.msix) this.#removeMsix = ctx.msix.onChange((e) => this.#msixChanged(e));
  }

  /** How the device interrupts the guest right now. */
  get mode(): PciIrqType | 'none' {
    return this.#mode;
  }

  /**
   * The host side of the current mode: its `fds` are the raw trigger eventfds per vector, for a VMM
   * that hands them to KVM_IRQFD. Null while nothing is enabled on the host.
   */
  get host(): HostIrq | null {
    return this.#host;
  }

  /**
   * routeIntx: keeps INTx enabled on the host while the guest has neither MSI nor MSI-X on, with or
   * without 'interrupt' listeners, for a router that consumes its trigger eventfd (`host.fds[0]`)
   * outside JavaScript, and hands `req.resample` to VFIO as the unmask eventfd. A host INTx that is
   * already up is enabled again to carry it; each enable is told as a 'mode' change, after which the
   * router attaches to the new `host`. One router at a time. Returns the function that withdraws the
   * request (idempotent), leaving INTx to the listeners as before.
   */
  routeIntx(req: IntxRouteRequest): () => void {
    this.#checkOpen();
    if (req === null || typeof req !== 'object' || req.resample === undefined) {
      throw new ArgTypeError('routeIntx needs { resample }: the eventfd VFIO unmasks INTx with');
    }
    if (this.#intxRoute !== null) {
      throw new ArgRangeError(`${this.#ctx.bdf}: INTx is already routed; withdraw that route first`);
    }
    this.#intxRoute = req;
    if (this.#mode === 'none' || this.#mode === 'intx') this.#enterIntx();
    return () => {
      if (this.#intxRoute !== req) return;
      this.#intxRoute = null;
      if (this.#closed || this.#mode !== 'intx') return;
      // Enabled again without the resample eventfd, so eoi() is what unmasks for the listeners.
      if (this.listenerCount('interrupt') > 0) this.#enterIntx();
      else this.#switch('none', 0);
    };
  }

  /** The message of an MSI or MSI-X vector as the guest programmed it. */
  message(
    type: 'msi' | 'msix',
    vector: number,
  ): {
    /** The message address (for x86, a 0xFEExxxxx LAPIC address). */
    address: bigint;
    /** The message data (for MSI, with the vector number in its low bits). */
    data: number;
    /** The vector's own mask bit (always false for MSI without per-vector masking). */
    masked: boolean;
  } {
    if (type === 'msi') {
      if (!this.msi) throw new ArgRangeError(`${this.#ctx.bdf} has no MSI capability`);
      return this.msi.vector(vector);
    }
    if (!this.#ctx.msix) throw new ArgRangeError(`${this.#ctx.bdf} has no MSI-X capability`);
    return this.#ctx.msix.vector(vector);
  }

  /**
   * End of interrupt for INTx: the guest serviced the device, so the line is unmasked on the host
   * and the next assertion is delivered. A no-op in other modes.
   */
  eoi(): void {
    this.#checkOpen();
    if (this.#mode !== 'intx' || !this.#host?.enabled) return;
    this.#guard('INTx unmask', () => this.#host?.unmask(0));
  }

  /** Interrupts keep the process alive (the default). */
  ref(): this {
    this.#refed = true;
    this.#host?.ref();
    return this;
  }

  /** Interrupts no longer keep the process alive. */
  unref(): this {
    this.#refed = false;
    this.#host?.unref();
    return this;
  }

  // ---- hooks for VfioPciDevice ------------------------------------------------------------------

  /** A guest config write landed in the emulated config: follow MSI and INTx-disable changes. @internal */
  configWritten(offset: number, size: number): void {
    if (this.#closed) return;
    if (this.msi?.overlaps(offset, size)) this.#msiChanged();
    if (offset < PCI_COMMAND + 2 && PCI_COMMAND < offset + size) this.#commandChanged();
  }

  /**
   * Stops host interrupts for a reset, keeping the eventfds (a KVM VMM's irqfds stay valid). @internal
   */
  suspend(): void {
    this.#guard('disable for reset', () => this.#host?.disable());
  }

  /** After a reset that keeps the guest's setup: the same vectors come back. @internal */
  resume(): void {
    const host = this.#host;
    if (!host) return;
    this.#guard('enable after reset', () => {
      host.enable();
      if (this.#mode === 'intx') host.unmask(0);
    });
    this.#msixFlushAll();
  }

  /**
   * After a reset that the guest sees: MSI and MSI-X are back to their reset state (disabled) and
   * INTx is wired again if someone listens, as QEMU's post-reset does. @internal
   */
  resetState(): void {
    this.#closeHost();
    this.#mode = 'none';
    this.#intxHeld = false;
    this.msi?.reset();
    this.#msiState = this.msi?.snapshot() ?? null;
    this.#ctx.msix?.reset();
    this.#emitChange({ kind: 'mode', mode: 'none', vectors: 0 });
    if (this.#wantsIntx()) this.#enterIntx();
  }

  /**
   * From now on the host's changes (each mode switch, unmask and resample eventfd: the device's
   * VFIO_DEVICE_SET_IRQS) are made on the thread pool, in order, instead of inside the config or
   * MSI-X table write that asked for them (Device.queueIrqChanges): a VMM's event loop does not
   * wait the tens of milliseconds a nested kernel takes to enable MSI-X. A change the kernel
   * refuses is reported as one refused at once is. {@link hostChanges} is what the vCPU that wrote
   * waits for. Nothing changes for a device that cannot queue (a fake). @internal
   */
  queueHostChanges(): void {
    const d = this.#device();
    d?.queueIrqChanges?.((e) => this.#report('host change', e));
  }

  /** Resolves once the host changes queued so far are made; null when none waits. @internal */
  get hostChanges(): Promise<void> | null {
    return this.#device()?.irqChanges ?? null;
  }

  /** Disables everything on the host and stops delivery. Idempotent. @internal */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#intxRoute = null;
    this.#removeMsix?.();
    this.#closeHost();
    const req = this.#req;
    this.#req = null;
    this.#guard('REQ disable', () => req?.close());
  }

  // ---- modes ------------------------------------------------------------------------------------

  #device(): IrqCapableDevice | null {
    const d = this.#ctx.device;
    return isIrqCapable(d) ? d : null;
  }

  #closeHost(): void {
    const host = this.#host;
    this.#host = null;
    if (host) this.#guard('disable', () => host.close());
  }

  /** Switches the host to `mode` with `vectors` vectors (closing what was there). */
  #switch(mode: PciIrqType | 'none', vectors: number): void {
    this.#closeHost();
    this.#mode = 'none';
    if (mode !== 'none') {
      const d = this.#device();
      if (d) {
        const index = mode === 'intx' ? INTX : mode === 'msi' ? MSI : MSIX;
        const resample = mode === 'intx' ? this.#intxRoute?.resample : undefined;
        this.#guard(`enable ${mode}`, () => {
          const host = d.enableIrq(index, {
            vectors,
            ref: this.#refed,
            ...(resample !== undefined ? { resample } : {}),
          });
          // Without an 'error' listener a failed watch is a process warning: it is the host's.
          host.on('interrupt', (v, n) => this.#fired(mode, v, n));
          this.#host = host;
        });
      }
      this.#mode = mode;
    }
    this.#emitChange({ kind: 'mode', mode: this.#mode, vectors: mode === 'none' ? 0 : vectors });
  }

  #enterIntx(): void {
    if (this.pin === 0 || this.#closed) return;
    this.#switch('intx', 1);
  }

  /** INTx is wanted by JavaScript listeners or by a router (see routeIntx). */
  #wantsIntx(): boolean {
    return this.listenerCount('interrupt') > 0 || this.#intxRoute !== null;
  }

  /** After MSI or MSI-X went off: back to INTx if someone wants it, else nothing. */
  #fallBack(): void {
    if (this.#wantsIntx() && this.pin !== 0) this.#switch('intx', 1);
    else this.#switch('none', 0);
  }

  #enableReq(): void {
    if (this.#req !== null) return;
    const d = this.#device();
    if (!d) return;
    let info: IrqInfo;
    try {
      info = d.irqInfo(REQ);
    } catch {
      return; // no REQ index on this kernel or device: nothing will ever ask
    }
    if (info.count === 0) return;
    this.#guard('REQ enable', () => {
      // The request must never keep a VMM alive on its own.
      const req = d.enableIrq(REQ, { ref: false });
      req.on('interrupt', () => this.#requested());
      this.#req = req;
    });
  }

  #requested(): void {
    this.emit('req');
  }

  // ---- delivery ---------------------------------------------------------------------------------

  #fired(type: PciIrqType, vector: number, count: number): void {
    if (this.#closed || type !== this.#mode) return;
    if (type === 'msix') {
      const msix = this.#ctx.msix!;
      if (!msix.enabled) return;
      if (msix.functionMasked || msix.isMasked(vector)) {
        msix.setPending(vector, true);
        return;
      }
    } else if (type === 'msi') {
      if (this.msi!.isMasked(vector)) {
        this.msi!.setPending(vector, true);
        return;
      }
    } else if (this.#ctx.command() & PCI_COMMAND_INTX_DISABLE) {
      this.#intxHeld = true;
      return;
    }
    this.#deliver(vector, count, type);
  }

  #deliver(vector: number, count: number, type: PciIrqType): void {
    this.emit('interrupt', vector, count, type);
  }

  #commandChanged(): void {
    if (this.#mode !== 'intx' || !this.#intxHeld) return;
    if (this.#ctx.command() & PCI_COMMAND_INTX_DISABLE) return;
    this.#intxHeld = false;
    this.#deliver(0, 1, 'intx');
  }

  #msiChanged(): void {
    const msi = this.msi!;
    const before = this.#msiState!;
    const now = msi.snapshot();
    this.#msiState = now;
    if (this.#ctx.msix?.enabled && now.enabled) {
      // Enabling both at once is undefined for the device; MSI-X wins, as it does in QEMU's core.
      this.#ctx.reporter.report({
        bdf: this.#ctx.bdf,
        reason: 'irq',
        isWrite: true,
        where: 'MSI enable while MSI-X is enabled',
        offset: msi.capOffset,
        size: 2,
      });
      return;
    }
    const switched =
      now.enabled !== before.enabled || (now.enabled && now.vectors.length !== before.vectors.length);
    if (switched) {
      if (now.enabled) this.#switch('msi', now.vectors.length);
      else if (this.#mode === 'msi') this.#fallBack();
    }
    if (!now.enabled) return;
    for (const v of now.vectors) {
      const old = before.vectors[v.index];
      const same = old && old.address === v.address && old.data === v.data && old.masked === v.masked;
      if (same && !switched) continue;
      this.#emitChange(vectorChange('msi', v));
      if (!v.masked && msi.isPending(v.index)) {
        msi.setPending(v.index, false);
        this.#deliver(v.index, 1, 'msi');
      }
    }
  }

  #msixChanged(e: MsixEvent): void {
    if (this.#closed) return;
    const msix = this.#ctx.msix!;
    if (e.kind === 'control') {
      if (e.enabled && this.#mode !== 'msix') {
        if (this.msi?.enabled) {
          this.#ctx.reporter.report({
            bdf: this.#ctx.bdf,
            reason: 'irq',
            isWrite: true,
            where: 'MSI-X enable while MSI is enabled',
            offset: msix.capOffset,
            size: 2,
          });
        }
        this.#switch('msix', this.#msixWanted());
        for (const v of msix.vectors()) if (!v.masked) this.#emitChange(vectorChange('msix', v));
      } else if (!e.enabled && this.#mode === 'msix') {
        this.#fallBack();
      }
      if (e.enabled && !e.functionMasked) this.#msixFlushAll();
      return;
    }
    const v = e.vector;
    if (this.#mode !== 'msix') return;
    // Grown before the change is told, so a VMM routing it finds the vector's eventfd in host.fds.
    const host = this.#host;
    if (!v.masked && host && v.index >= host.vectors) {
      this.#guard('MSI-X grow', () => host.resize(v.index + 1));
    }
    this.#emitChange(vectorChange('msix', v));
    if (v.masked) return;
    this.#msixFlush(v.index);
  }

  /** Host vectors MSI-X needs: up to the highest unmasked entry, at least one. */
  #msixWanted(): number {
    const msix = this.#ctx.msix!;
    let n = 1;
    for (const v of msix.vectors()) if (!v.masked) n = v.index + 1;
    return n;
  }

  #msixFlush(index: number): void {
    const msix = this.#ctx.msix!;
    if (!msix.enabled || msix.functionMasked || !msix.isPending(index)) return;
    if (msix.isMasked(index)) return;
    msix.setPending(index, false);
    this.#deliver(index, 1, 'msix');
  }

  #msixFlushAll(): void {
    const msix = this.#ctx.msix;
    if (!msix || this.#mode !== 'msix') return;
    for (let i = 0; i < msix.entries; i++) this.#msixFlush(i);
  }

  #emitChange(c: PciIrqChange): void {
    this.emit('change', c);
  }

  /** Runs a host operation the guest caused: a VFIO failure is reported, never thrown. */
  #guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (!isVfioError(e)) throw e;
      this.#report(what, e);
    }
  }

  #report(what: string, error: unknown): void {
    this.#ctx.reporter.report({
      bdf: this.#ctx.bdf,
      reason: 'irq',
      isWrite: true,
      where: `interrupts: ${what}`,
      offset: 0,
      size: 0,
      error: error instanceof Error ? error : new Error(String(error)),
    });
  }

  #checkOpen(): void {
    if (this.#closed) throw closedError('PciInterrupts', `the interrupts of ${this.#ctx.bdf}`, this.#ctx.bdf);
  }
}

function vectorChange(
  type: 'msi' | 'msix',
  v: { index: number; address: bigint; data: number; masked: boolean },
): PciIrqChange {
  return { kind: 'vector', type, vector: v.index, address: v.address, data: v.data, masked: v.masked };
}
