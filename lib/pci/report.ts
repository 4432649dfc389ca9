import type { EventEmitter } from 'node:events';

import { emitGuarded } from '../base/events';
import { RateLimitedLog, type RateLimitedLogOptions } from '../memory/rate-limited-log';

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
  /** The error behind an `fd-error`. */
  readonly error?: Error;
}

/**
 * How a device logs what it reports: at most once per `logIntervalMs` with a count of those left
 * out; a process warning by default, `null` turns logging off (the event and counter remain).
 */
export type DeviceReportOptions = RateLimitedLogOptions;

function defaultLog(line: string): void {
  process.emitWarning(line, { type: 'VfioPciDeviceWarning', code: 'VFIO_BRIDGE_DEVICE_ERROR' });
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
 * DeviceReporter: the counter, listeners and rate-limited log behind a device's `device-error`
 * event, so guest accesses are reported and never thrown at the VMM (as AddressSpace does for
 * unassigned accesses).
 */
export class DeviceReporter {
  #count = 0;
  readonly #log: RateLimitedLog;
  #emitter: EventEmitter | null;

  /** `emitter` hears each report as its `device-error` event (the device itself, for a VfioPciDevice). */
  constructor(opts: DeviceReportOptions = {}, emitter: EventEmitter | null = null) {
    this.#log = new RateLimitedLog(opts, defaultLog);
    this.#emitter = emitter;
  }

  /**
   * From now on `emitter` hears each report. A device is built before it exists as an emitter, and
   * nobody can listen to it meanwhile: what the build reports is counted and logged only.
   */
  emitTo(emitter: EventEmitter): void {
    this.#emitter = emitter;
  }

  /** Reports since creation. */
  get count(): number {
    return this.#count;
  }

  /** Counts, logs (rate-limited) and emits one unserved guest access. */
  report(e: DeviceErrorEvent): void {
    this.#count++;
    const why = e.error ? `: ${e.error.message.split('\n')[0]}` : '';
    this.warn(
      `${e.bdf}: ${e.reason} ${e.isWrite ? 'write' : 'read'} at 0x${e.offset.toString(16)} size ${e.size} in '${e.where}'${why}`,
    );
    if (this.#emitter !== null) {
      emitGuarded(this.#emitter, 'device-error', [e], (err) =>
        this.warn(
          `${e.bdf}: a 'device-error' listener threw: ${err instanceof Error ? err.message : String(err)}`,
        ),
      );
    }
  }

  /** Logs one line at setup, where lines are few and bounded, so none is rate-limited away. */
  notice(line: string): void {
    this.#log.notice(line);
  }

  /** Logs one line, at most once per interval, counting the lines left out. */
  warn(line: string): void {
    this.#log.line(line);
  }
}
