/**
 * PcMachine's options and what it reports: the types a VMM built on it sees, and the checks its
 * options get before anything is opened.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { GuestErrorSink } from '../base/guest-error';
import * as fs from 'node:fs';
import type { DmaCommitError, DmaErrorEvent, DmaSkip } from '../dma';
import type { RoutedAccess, VcpuExit } from '../kvm';
import type { UnassignedAccess } from '../memory';
import type { DeviceErrorEvent } from '../pci';
import { checkBackendChoice, type VfioBackendChoice } from '../vfio/backend';
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
  /** Device ID the guest sees instead of the device's own. */
  readonly deviceId?: number;
}

/** Something the guest (or a device, or KVM on the guest's behalf) did that the machine absorbed. */
export type PcReport =
  | {
      /** A passed-through device could not serve a guest access as asked. */
      readonly kind: 'device';
      /** The device's `device-error` event. */
      readonly event: DeviceErrorEvent;
    }
  | {
      /** A guest access reached no region of the bus, or a region refused it. */
      readonly kind: 'unassigned';
      /** The bus space it was in: guest-physical memory or ports. */
      readonly space: 'memory' | 'io';
      /** The address space's `unassigned` event. */
      readonly access: UnassignedAccess;
    }
  | {
      /** KVM refused to follow the guest's interrupt setup for a device (a route or an irqfd). */
      readonly kind: 'interrupt';
      /** PCI address of the device. */
      readonly bdf: string;
      /** Which vector: `<bdf> msi <n>`, `<bdf> msix <n>` or `<bdf> intx`. */
      readonly key: string;
      /** What KVM threw. */
      readonly error: Error;
    }
  | {
      /** KVM refused to set a board interrupt line (KVM_IRQ_LINE, e.g. the UART's). */
      readonly kind: 'irq-line';
      /** The ISA IRQ / GSI number (4 for the UART). */
      readonly irq: number;
      /** What KVM threw. */
      readonly error: Error;
    }
  | {
      /** A device had no reset method at a reboot; only its guest-visible state was reset. */
      readonly kind: 'reset';
      /** PCI address of the device. */
      readonly bdf: string;
      /** The ENORESET VfioError. */
      readonly error: Error;
    }
  | {
      /** The DMA listener left a section unmapped (reported once per distinct section). */
      readonly kind: 'dma';
      /** `skip`: a section the IOMMU cannot map. */
      readonly what: 'skip';
      /** Which section, and why. */
      readonly skip: DmaSkip;
    }
  | {
      /** A non-fatal DMA map or unmap the kernel refused. */
      readonly kind: 'dma';
      /** `error`: a refused map of device memory, or a refused unmap. */
      readonly what: 'error';
      /** The DMA listener's `dma-error` event. */
      readonly error: DmaErrorEvent;
    }
  | {
      /** Guest RAM could not be mapped for DMA; the commit was undone. */
      readonly kind: 'dma';
      /** `fatal`: devices cannot reach that RAM. */
      readonly what: 'fatal';
      /** The DMA listener's `fatal` error. */
      readonly error: DmaCommitError;
    }
  | {
      /** An access a vCPU thread served itself failed; the guest read all-ones or lost its write. */
      readonly kind: 'access';
      /** The id of the vCPU that made it. */
      readonly vcpu: number;
      /** `mmio` or `pio`. */
      readonly space: 'mmio' | 'pio';
      /** Guest-physical address or port. */
      readonly address: number;
      /** Length in bytes. */
      readonly size: number;
      /** True for a write. */
      readonly isWrite: boolean;
      /** `SIGBUS` (a revoked BAR mapping) or the errno name of a failed pread/pwrite. */
      readonly code: string;
    };

/** Why a run ended. */
export type PcExit =
  | {
      /** The guest reset the machine; {@link PcMachine.reboot} boots it again. */
      readonly reason: 'reset';
      /**
       * How: the keyboard controller's reset command (`i8042`), the reset control register at 0xcf9
       * (`reset-control`), a triple fault, or a KVM system event (shutdown, reset or crash).
       */
      readonly by: 'i8042' | 'reset-control' | 'triple-fault' | 'system-event';
    }
  | {
      /** {@link PcMachine.stop} or {@link PcMachine.close} ended the run. */
      readonly reason: 'stopped';
    }
  | {
      /** The run's `timeoutMs` elapsed. */
      readonly reason: 'timeout';
    }
  | {
      /** KVM_RUN failed, serving an exit threw, or the guest made an exit a PC cannot take. */
      readonly reason: 'error';
      /** The exit that ended the run (entry failure, internal error, ...), when it was one. */
      readonly exit?: VcpuExit;
      /** What was thrown, when something was. */
      readonly error?: unknown;
    };

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
  /** Devices to pass through, opened in order (default none). */
  readonly devices?: readonly PcDeviceSpec[];
  /** Each console byte string as the guest writes it. */
  readonly onOutput?: (bytes: Uint8Array) => void;
  /** Each complete console line. */
  readonly onLine?: (line: string) => void;
  /**
   * Where every part of the machine reports what the guest does wrong (default: a sink of the
   * machine's own, `pc.guestErrors`, which logs rate-limited while nobody listens).
   */
  readonly guestErrors?: GuestErrorSink;
  /**
   * What the machine absorbed (see {@link PcReport}); also counted in {@link PcMachine.reportCounts}.
   * @deprecated listen to `guest-error` (`pc.on('guest-error', ...)`): every report, from every layer
   */
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
  /**
   * Serve the console's THR writes and LSR and MSR reads on the vCPU threads while the UART's
   * state allows (default true; lib/vmm's UartOnVcpuThreads). False hands every console access to
   * JavaScript, one at a time, so that `onAccess` hears each of them.
   */
  readonly consoleOnVcpuThreads?: boolean;
  /** The KVM device (default /dev/kvm). */
  readonly kvmPath?: string;
  /**
   * The devices' IOMMU backend: `auto` (default: iommufd with the devices' cdevs when the kernel
   * offers /dev/iommu and the first device has a cdev, else type1), `iommufd` or `type1` (an
   * override that cannot be honoured fails the open, saying why). `machine.backendDecision` says
   * which was taken and why.
   */
  readonly backend?: VfioBackendChoice;
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
  /** KVM memory slots in use by the current boot's VM. */
  readonly memorySlots: number;
  /** irqfds assigned on the VM. */
  readonly irqfds: number;
  /** ioeventfds assigned on the VM. */
  readonly ioeventfds: number;
  /** IOMMU mappings in the machine's VFIO container (0 when it has none or it is closed). */
  readonly dmaMappings: number;
  /** Passed-through devices not yet closed. */
  readonly openDevices: number;
  /** vCPUs of the current boot's VM. */
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
  checkBackendChoice(opts.backend, 'backend');
  if (opts.guestErrors !== undefined && !(opts.guestErrors instanceof GuestErrorSink))
    throw new ArgTypeError('guestErrors must be a GuestErrorSink');
  for (const k of ['onOutput', 'onLine', 'onReport', 'onAccess'] as const) {
    if (opts[k] !== undefined && typeof opts[k] !== 'function')
      throw new ArgTypeError(`${k} must be a function`);
  }
  if (opts.devices !== undefined && !Array.isArray(opts.devices))
    throw new ArgTypeError('devices must be an array');
  if (opts.cmdline !== undefined && typeof opts.cmdline !== 'string')
    throw new ArgTypeError('cmdline must be a string');
  if (opts.consoleOnVcpuThreads !== undefined && typeof opts.consoleOnVcpuThreads !== 'boolean')
    throw new ArgTypeError('consoleOnVcpuThreads must be a boolean');
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

/**
 * readInputAsync: {@link readInput} without holding the event loop while the file is read: node:fs's
 * callback readFile, which reads in pieces on the libuv thread pool. (fs.promises would too, but its
 * first use loads a part of Node, fs/promises and the readline modules, on the event loop.)
 */
export async function readInputAsync(what: string, v: string | Uint8Array): Promise<Uint8Array> {
  if (v instanceof Uint8Array) return v;
  if (typeof v !== 'string') throw new ArgTypeError(`${what} must be a path or a Uint8Array`);
  try {
    return await new Promise<Buffer>((resolve, reject) =>
      fs.readFile(v, (e, data) => (e ? reject(e) : resolve(data))),
    );
  } catch (e) {
    throw new VmmError(
      'EINPUT',
      `cannot read the ${what} ${v}: ${(e as Error).message}`,
      `check the ${what} path`,
    );
  }
}

/** The VfioPciDevice options a device spec asks for (the device reports to the machine's sink). */
export function deviceOptions(spec: PcDeviceSpec): { vendorId?: number; deviceId?: number } {
  return {
    ...(spec.vendorId !== undefined ? { vendorId: spec.vendorId } : {}),
    ...(spec.deviceId !== undefined ? { deviceId: spec.deviceId } : {}),
  };
}
