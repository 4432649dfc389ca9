import type { EventEmitter } from 'node:events';

import { emitGuarded } from '../base/events';
import { sinkOf, type GuestErrorAction, type GuestErrorSink } from '../base/guest-error';

/**
 * Why a guest access to a vfio-pci device was not served as asked:
 * - `fd-error`: the device fd refused a pread/pwrite (e.g. EIO while the device is in D3hot); reads
 *   return all-ones, writes are dropped, as QEMU's vfio_region_read/write do;
 * - `msix-window`: an RTL8168 window access aimed at the MSI-X table that the emulated table
 *   refuses (unaligned, outside the table, or no table at all);
 * - `config-range`: a configuration access beyond the device's configuration space;
 * - `config-unimplemented`: a configuration write to bytes of the standard space that hold no
 *   register (outside the header and every capability); it is passed on, and the kernel drops it;
 * - `unbacked`: an access to a part of a BAR window nothing serves (the base BAR region: the half
 *   a BAR gained from MSI-X relocation, say); reads return 0 and writes are dropped, as in QEMU;
 * - `irq`: the host refused to follow the guest's interrupt setup (VFIO_DEVICE_SET_IRQS failed), or
 *   an interrupt arrived that the guest cannot take (e.g. MSI-X disabled meanwhile).
 */
export type DeviceErrorReason =
  'fd-error' | 'msix-window' | 'config-range' | 'config-unimplemented' | 'unbacked' | 'irq';

/** One guest access a device could not serve, as passed to `device-error` listeners. */
export interface DeviceErrorEvent {
  /** PCI address of the device. */
  readonly bdf: string;
  /** Why the access was not served as asked. */
  readonly reason: DeviceErrorReason;
  /** True when the access was a write, false for a read. */
  readonly isWrite: boolean;
  /** The region name (QEMU's naming), or "config" for configuration space. */
  readonly where: string;
  /** Offset inside `where`. */
  readonly offset: number;
  /** Width of the access in bytes. */
  readonly size: number;
  /** The value of a write, where it is known. */
  readonly value?: number | bigint;
  /** The error behind an `fd-error`. */
  readonly error?: Error;
}

/**
 * Where a device reports: `guestErrors`, the machine's sink (a machine passes its own), else the
 * bus's; `log`/`logIntervalMs` instead give the device a sink of its own with that log.
 */
export interface DeviceReportOptions {
  /** The sink the device reports to (default: its bus's, {@link SystemAddressSpaces.guestErrors}). */
  guestErrors?: GuestErrorSink;
  /** A sink of the device's own with this log (`null`: none; the event and counter remain). */
  log?: ((line: string) => void) | null;
  /** With `log`: the own sink's minimum time between two summary lines, in milliseconds. */
  logIntervalMs?: number;
}

/** The sink a device opened on `bus` with `opts` reports to. */
export function deviceSink(opts: DeviceReportOptions, bus: { guestErrors: GuestErrorSink }): GuestErrorSink {
  if (opts.guestErrors === undefined && opts.log === undefined && opts.logIntervalMs === undefined) {
    return bus.guestErrors;
  }
  return sinkOf(opts);
}

/** What a device does instead, and what usually causes it, by reason. */
const REASONS: Record<DeviceErrorReason, { kind: string; hint: string }> = {
  'fd-error': {
    kind: 'fd-error',
    hint: 'the device fd refused the access (EIO while the guest keeps the device in D3hot, say)',
  },
  'msix-window': {
    kind: 'msix-window',
    hint: 'an RTL8168 window access to the MSI-X table that is unaligned, outside it, or with no table',
  },
  'config-range': { kind: 'config-range', hint: "past the end of the device's configuration space" },
  'config-unimplemented': {
    kind: 'config-unimplemented',
    hint: 'no register there (outside the header and every capability): passed on, and the kernel drops it',
  },
  unbacked: {
    kind: 'unbacked',
    hint: 'a part of a BAR window nothing serves (the half a BAR gained from MSI-X relocation, say)',
  },
  irq: {
    kind: 'irq-setup',
    hint: "the host could not follow the guest's interrupt setup, or the guest enabled MSI and MSI-X together",
  },
};

function actionOf(e: DeviceErrorEvent): GuestErrorAction {
  if (e.reason === 'irq') return 'ignored';
  if (e.reason === 'config-unimplemented') return e.isWrite ? 'passed-on' : 'read-zero';
  if (!e.isWrite) return e.reason === 'unbacked' ? 'read-zero' : 'read-all-ones';
  return 'dropped';
}

/**
 * True for the errors a device fd access is expected to fail with: a VfioError from lib/vfio (matched
 * by name and code, so lib/pci never loads the native addon). Programming errors are not matched.
 */
export function isVfioError(e: unknown): e is Error & {
  /** The VfioError's code: an errno name or one of lib/vfio's own codes. */
  code: string;
} {
  return e instanceof Error && e.name === 'VfioError' && typeof (e as { code?: unknown }).code === 'string';
}

/**
 * DeviceReporter: turns a device's unserved guest accesses into guest errors (source `pci`) on its
 * sink, and emits the deprecated `device-error` event, so guest accesses are reported and never
 * thrown at the VMM. @internal
 */
export class DeviceReporter {
  #count = 0;
  /** The sink the device reports to. */
  readonly sink: GuestErrorSink;
  #emitter: EventEmitter | null;

  /** `emitter` hears each report as its `device-error` event (the device itself, for a VfioPciDevice). */
  constructor(sink: GuestErrorSink, emitter: EventEmitter | null = null) {
    this.sink = sink;
    this.#emitter = emitter;
  }

  /**
   * From now on `emitter` hears each report. A device is built before it exists as an emitter, and
   * nobody can listen to it meanwhile: what the build reports goes to the sink only.
   */
  emitTo(emitter: EventEmitter): void {
    this.#emitter = emitter;
  }

  /** Reports since creation. */
  get count(): number {
    return this.#count;
  }

  /** Reports one unserved guest access to the sink (and the deprecated event). */
  report(e: DeviceErrorEvent): void {
    this.#count++;
    const why = e.error ? `: ${e.error.message.split('\n')[0]}` : '';
    const r = REASONS[e.reason];
    this.sink.report({
      source: 'pci',
      kind: r.kind,
      device: e.bdf,
      where: e.where,
      address: e.offset,
      width: e.size,
      write: e.isWrite,
      ...(e.value !== undefined ? { value: e.value } : {}),
      action: actionOf(e),
      message: `${e.reason} ${e.isWrite ? 'write' : 'read'} at 0x${e.offset.toString(16)} size ${e.size} in '${e.where}'${why}`,
      hint: r.hint,
      ...(e.error !== undefined ? { error: e.error } : {}),
      detail: e,
    });
    if (this.#emitter !== null && this.#emitter.listenerCount('device-error') > 0) {
      emitGuarded(this.#emitter, 'device-error', [e], (err) =>
        this.sink.report({
          source: 'pci',
          kind: 'listener-threw',
          device: e.bdf,
          action: 'ignored',
          message: `a 'device-error' listener threw: ${err instanceof Error ? err.message : String(err)}`,
          error: err,
        }),
      );
    }
  }
}
