/**
 * PcMachine's options and what it reports: the types a VMM built on it sees, and the checks its
 * options get before anything is opened.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import * as fs from 'node:fs';
import type { DmaCommitError, DmaErrorEvent, DmaSkip } from '../dma';
import type { RoutedAccess, VcpuExit } from '../kvm';
import type { UnassignedAccess } from '../memory';
import type { DeviceErrorEvent } from '../pci';
import { VmmError } from './errors';

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;
/** Where the PCI hole starts: RAM above it is not supported by this machine (one low RAM range). */
export const PCI_HOLE = 3 * GiB;
export const DEFAULT_CMDLINE = 'console=ttyS0 reboot=k panic=-1';

/** One device to pass through. */
export interface PcDeviceSpec {
  /** Host PCI address of a device bound to vfio-pci, or the UUID of a vfio-pci mediated device. */
  readonly bdf: string;
  /** Guest slot on bus 0 (default: 3, 4, … in order). */
  readonly slot?: number;
  /** Vendor/device ID the guest sees instead of the device's own. */
  readonly vendorId?: number;
  readonly deviceId?: number;
}

/** Something the guest (or a device, or KVM on the guest's behalf) did that the machine absorbed. */
export type PcReport =
  | { readonly kind: 'device'; readonly event: DeviceErrorEvent }
  | { readonly kind: 'unassigned'; readonly space: 'memory' | 'io'; readonly access: UnassignedAccess }
  | { readonly kind: 'interrupt'; readonly bdf: string; readonly key: string; readonly error: Error }
  | { readonly kind: 'irq-line'; readonly irq: number; readonly error: Error }
  | { readonly kind: 'reset'; readonly bdf: string; readonly error: Error }
  | { readonly kind: 'dma'; readonly what: 'skip'; readonly skip: DmaSkip }
  | { readonly kind: 'dma'; readonly what: 'error'; readonly error: DmaErrorEvent }
  | { readonly kind: 'dma'; readonly what: 'fatal'; readonly error: DmaCommitError }
  | {
      readonly kind: 'access';
      readonly vcpu: number;
      readonly space: 'mmio' | 'pio';
      readonly address: number;
      readonly size: number;
      readonly isWrite: boolean;
      /** `SIGBUS` (a revoked BAR mapping) or the errno name of a failed pread/pwrite. */
      readonly code: string;
    };

/** Why a run ended. */
export type PcExit =
  | { readonly reason: 'reset'; readonly by: 'i8042' | 'reset-control' | 'triple-fault' | 'system-event' }
  | { readonly reason: 'stopped' }
  | { readonly reason: 'timeout' }
  | { readonly reason: 'error'; readonly exit?: VcpuExit; readonly error?: unknown };

/** Options of {@link PcMachine.create}. */
export interface PcMachineOptions {
  /** The bzImage (a path or its bytes). */
  readonly kernel: string | Uint8Array;
  /** The initramfs (a path or its bytes). */
  readonly initrd?: string | Uint8Array;
  /**
   * The kernel command line (default `console=ttyS0 reboot=k panic=-1`). Without ACPI the guest
   * should reboot with `reboot=k` (the keyboard controller): see mptable.ts.
   */
  readonly cmdline?: string;
  /** Guest RAM in bytes (default 256 MiB; at least 32 MiB, at most 3 GiB). */
  readonly ramSize?: number;
  /**
   * Back guest RAM with huge pages (see GuestRamOptions.hugepages): the guest's page walks and
   * KVM's nested page tables then use 2 MiB entries, which matters most when KVM itself runs
   * nested. Needs a free huge page pool (VmmError ENOHUGEPAGES otherwise).
   */
  readonly hugepages?: boolean | number;
  /** vCPUs (default 1). */
  readonly cpus?: number;
  readonly devices?: readonly PcDeviceSpec[];
  /** Each console byte string as the guest writes it. */
  readonly onOutput?: (bytes: Uint8Array) => void;
  /** Each complete console line. */
  readonly onLine?: (line: string) => void;
  /** What the machine absorbed (see {@link PcReport}); also counted in {@link PcMachine.reportCounts}. */
  readonly onReport?: (r: PcReport) => void;
  /**
   * Hears every MMIO and port access served in JavaScript, after it was served (for tracing). The
   * accesses the vCPU threads serve themselves are only counted ({@link PcMachine.exits}).
   */
  readonly onAccess?: (a: RoutedAccess) => void;
  /**
   * The vCPU threads' nice value (default 0; -20..19). Where vCPU threads and the event loop share
   * a CPU, a positive value lets the loop (device models, timers, the management API) preempt a
   * running vCPU at once instead of after the scheduler's slice.
   */
  readonly vcpuNice?: number;
  /** The KVM device (default /dev/kvm). */
  readonly kvmPath?: string;
}

/** Options of {@link PcMachine.run}. */
export interface PcRunOptions {
  /** End the run with `timeout` after this many ms (default: no limit). */
  readonly timeoutMs?: number;
  /** Abort the run: it rejects with the signal's reason, the vCPUs paused. */
  readonly signal?: AbortSignal;
}

/** What is still held, for a VMM (or a test) to check that nothing is left behind. */
export interface PcResources {
  readonly memorySlots: number;
  readonly irqfds: number;
  readonly ioeventfds: number;
  readonly dmaMappings: number;
  readonly openDevices: number;
  readonly vcpus: number;
}

/** The options {@link checkPcOptions} accepted, with their defaults, and the input files read. */
export interface CheckedPcOptions {
  readonly ramSize: number;
  readonly cpus: number;
  readonly kernel: Uint8Array;
  readonly initrd: Uint8Array | undefined;
}

/** checkPcShape: RangeErrors and TypeErrors naming what is wrong in the options. */
export function checkPcShape(opts: PcMachineOptions): { ramSize: number; cpus: number } {
  if (opts === null || typeof opts !== 'object') throw new ArgTypeError('PcMachine.create needs options');
  const ramSize = opts.ramSize ?? 256 * MiB;
  if (!Number.isSafeInteger(ramSize) || ramSize < 32 * MiB || ramSize > PCI_HOLE || ramSize % MiB !== 0) {
    throw new ArgRangeError(`ramSize ${String(ramSize)} must be a whole number of MiB in [32 MiB, 3 GiB]`);
  }
  const cpus = opts.cpus ?? 1;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 16) {
    throw new ArgRangeError(`cpus ${String(cpus)} must be an integer in [1, 16]`);
  }
  for (const k of ['onOutput', 'onLine', 'onReport', 'onAccess'] as const) {
    if (opts[k] !== undefined && typeof opts[k] !== 'function')
      throw new ArgTypeError(`${k} must be a function`);
  }
  if (opts.devices !== undefined && !Array.isArray(opts.devices))
    throw new ArgTypeError('devices must be an array');
  if (opts.cmdline !== undefined && typeof opts.cmdline !== 'string')
    throw new ArgTypeError('cmdline must be a string');
  const nice = opts.vcpuNice ?? 0;
  if (!Number.isInteger(nice) || nice < -20 || nice > 19)
    throw new ArgRangeError(`vcpuNice ${String(nice)} must be an integer in [-20, 19]`);
  return { ramSize, cpus };
}

/**
 * checkPcOptions: {@link checkPcShape}, then the kernel and initramfs read (VmmError EINPUT when
 * they cannot be), before anything is opened.
 */
export function checkPcOptions(opts: PcMachineOptions): CheckedPcOptions {
  return {
    ...checkPcShape(opts),
    kernel: readInput('kernel', opts.kernel),
    initrd: opts.initrd !== undefined ? readInput('initramfs', opts.initrd) : undefined,
  };
}

function readInput(what: string, v: string | Uint8Array): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (typeof v !== 'string') throw new ArgTypeError(`${what} must be a path or a Uint8Array`);
  try {
    return fs.readFileSync(v);
  } catch (e) {
    throw new VmmError(
      'EINPUT',
      `cannot read the ${what} ${v}: ${(e as Error).message}`,
      `check the ${what} path`,
    );
  }
}

/** readInputAsync: {@link readInput} without holding the event loop while the file is read. */
export async function readInputAsync(what: string, v: string | Uint8Array): Promise<Uint8Array> {
  if (v instanceof Uint8Array) return v;
  if (typeof v !== 'string') throw new ArgTypeError(`${what} must be a path or a Uint8Array`);
  try {
    return await fs.promises.readFile(v);
  } catch (e) {
    throw new VmmError(
      'EINPUT',
      `cannot read the ${what} ${v}: ${(e as Error).message}`,
      `check the ${what} path`,
    );
  }
}

/** The VfioPciDevice options a device spec asks for. */
export function deviceOptions(spec: PcDeviceSpec): { vendorId?: number; deviceId?: number; log: null } {
  return {
    ...(spec.vendorId !== undefined ? { vendorId: spec.vendorId } : {}),
    ...(spec.deviceId !== undefined ? { deviceId: spec.deviceId } : {}),
    log: null,
  };
}
