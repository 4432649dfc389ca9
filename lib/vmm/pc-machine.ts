/**
 * PcMachine: the reference machine of lib/vmm, a small PC that boots Linux on KVM with vfio-pci
 * devices passed through, assembled from the package's pieces:
 * - guest RAM, the PCI bus, the VFIO container and the DMA listener: lib/dma's `Machine`;
 * - per boot a fresh KVM VM: RAM slots, the in-kernel irqchip (PICs, IOAPIC, local APICs) and PIT,
 *   the KVM memory listener (BAR mmaps become slots), MSI/MSI-X on irqfds (`PciMsiRouting`), INTx
 *   on resample irqfds (`PciIntxRouting`), and the group fds in KVM's VFIO device;
 * - on the port bus: the 16550 console at 0x3f8 (IRQ 4), configuration mechanism #1 and the reset
 *   control register (0xcf8-0xcff), the keyboard controller's reset line (0x60/0x64), the CMOS
 *   clock (0x70/0x71) and the POST port 0x80 Linux uses as an I/O delay;
 * - BAR placement as firmware does it, an MP table, e820 and Linux's 64-bit boot protocol.
 *
 * Each boot gets a new VM because KVM has no "reset this VM": the irqchip, PIT, local APICs and
 * vCPUs come back in their power-on state only by being created again. Guest RAM, the devices and
 * their DMA mappings stay across boots; the devices are reset and their BARs placed again, as a
 * PC's reset and firmware do.
 *
 * Each vCPU runs on its own thread (lib/kvm's VcpuSet): the event loop is never held by the guest.
 * Accesses to BAR pieces that KVM cannot map directly (sub-page and fd-only BARs) are served on
 * the vCPU threads from an exit table that an ExitTableListener keeps equal to the flat view; the
 * rest (configuration cycles, the MSI-X table, the UART, quirks, unassigned space) are handed to
 * this thread, one at a time. A halted vCPU waits in the kernel, and interrupts that need no
 * JavaScript (MSI/MSI-X/INTx through irqfds, the timer, the APIC) never leave it.
 *
 * Nothing the guest does throws: what it does wrong is counted and reported (`onReport`), and a
 * run ends with a {@link PcExit} saying why.
 */
import * as fs from 'node:fs';
import { Machine, type DmaCommitError, type DmaErrorEvent, type DmaSkip } from '../dma';
import {
  Kvm,
  KvmMemoryListener,
  MsiRoutes,
  PciIntxRouting,
  PciMsiRouting,
  ExitTable,
  VcpuSet,
  type CpuidEntry,
  type ExitRouting,
  type RoutedAccess,
  type Vcpu,
  type VcpuExit,
  type VcpuSetEnd,
  type Vm,
} from '../kvm';
import { MemoryRegion, type UnassignedAccess } from '../memory';
import type { DeviceErrorEvent, VfioPciDevice } from '../pci';
import { Device } from '../vfio';
import { DEFAULT_PCI_WINDOWS, placeBars, type PlacedBar } from './bar-placement';
import { parseBzImage } from './boot/bzimage';
import { loadLinux, type LinuxBootLayout } from './boot/load-linux';
import { pcE820 } from './boot/e820';
import { setupBootVcpu } from './boot/vcpu-setup';
import { CMOS_INDEX_PORT, CmosRtc } from './cmos-rtc';
import { VmmError } from './errors';
import { ExitTableListener } from './exit-table-listener';
import { I8042_COMMAND_PORT, I8042_DATA_PORT, I8042ResetPort } from './i8042';
import { pciIntxGsi, pciIntxRoutes } from './intx';
import { MPTABLE_START, writeMpTable } from './mptable';
import { PCI_CONFIG_PORT, PciHostBridge } from './pci-host';
import { COM1_IRQ, COM1_PORT, Uart16550 } from './uart';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** Where the PCI hole starts: RAM above it is not supported by this machine (one low RAM range). */
const PCI_HOLE = 3 * GiB;
/** KVM_SET_TSS_ADDR: three pages below the BIOS area, away from the PCI window and the IOAPIC. */
const TSS_ADDR = 0xfffbd000;
const POST_PORT = 0x80;

/** One device to pass through. */
export interface PcDeviceSpec {
  /** Host PCI address of a device bound to vfio-pci. */
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

/** One boot's KVM objects. */
interface Boot {
  readonly vm: Vm;
  readonly vcpus: Vcpu[];
  readonly layout: LinuxBootLayout;
  readonly routes: MsiRoutes;
  readonly set: VcpuSet;
  readonly close: () => void;
}

interface RoutedDevice {
  readonly dev: VfioPciDevice;
  readonly slot: number;
}

function readInput(what: string, v: string | Uint8Array): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (typeof v !== 'string') throw new TypeError(`${what} must be a path or a Uint8Array`);
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

/** Runs every step even when one throws; throws the first error at the end. */
function allSteps(steps: (() => void)[]): void {
  const errors: unknown[] = [];
  for (const s of steps) {
    try {
      s();
    } catch (e) {
      errors.push(e);
    }
  }
  if (errors.length > 0) throw errors[0];
}

export class PcMachine implements Disposable {
  readonly machine: Machine;
  readonly kvm: Kvm;
  readonly uart: Uart16550;
  readonly host: PciHostBridge;
  readonly cpus: number;
  readonly devices: readonly VfioPciDevice[];
  readonly #routed: RoutedDevice[];
  readonly #kernel: Uint8Array;
  readonly #initrd: Uint8Array | undefined;
  #cmdline: string;
  readonly #onReport: ((r: PcReport) => void) | undefined;
  readonly #onAccess: ((a: RoutedAccess) => void) | undefined;
  readonly #skips = new Set<string>();
  readonly #supportedCpuid: CpuidEntry[];
  readonly #tscDeadline: boolean;
  readonly #counts = new Map<PcReport['kind'], number>();
  #bars: PlacedBar[] = [];
  #boot: Boot | null = null;
  #boots = 0;
  #pending: PcExit | null = null;
  #exits = { mmio: 0, io: 0 };
  /** What earlier boots' vCPU threads served without JavaScript, and their failed accesses. */
  #nativeTotals = { mmio: 0, pio: 0, faults: 0 };
  #running = false;
  #closed = false;
  #unserved = 0;

  private constructor(
    opts: PcMachineOptions,
    files: { kernel: Uint8Array; initrd: Uint8Array | undefined },
    machine: Machine,
    kvm: Kvm,
  ) {
    this.machine = machine;
    this.kvm = kvm;
    this.cpus = opts.cpus ?? 1;
    this.#kernel = files.kernel;
    this.#initrd = files.initrd;
    this.#cmdline = opts.cmdline ?? 'console=ttyS0 reboot=k panic=-1';
    this.#onReport = opts.onReport;
    this.#onAccess = opts.onAccess;
    this.#supportedCpuid = kvm.supportedCpuid();
    this.#tscDeadline = kvm.hasCapability('TSC_DEADLINE_TIMER');
    this.uart = new Uart16550({
      onOutput: opts.onOutput,
      onLine: opts.onLine,
      onIrq: (level) => this.#irqLine(COM1_IRQ, level),
    });
    this.host = new PciHostBridge({ onReset: () => this.#requestReset('reset-control') });
    const i8042 = new I8042ResetPort({ onReset: () => this.#requestReset('i8042') });
    const rtc = new CmosRtc();
    const io = machine.bus.io.root;
    io.addSubregion(this.uart.region(), COM1_PORT);
    io.addSubregion(this.host.region(), PCI_CONFIG_PORT);
    io.addSubregion(i8042.region(I8042_DATA_PORT), I8042_DATA_PORT);
    io.addSubregion(i8042.region(I8042_COMMAND_PORT), I8042_COMMAND_PORT);
    io.addSubregion(rtc.region(), CMOS_INDEX_PORT);
    // Linux writes port 0x80 as an I/O delay; a PC ignores it.
    io.addSubregion(MemoryRegion.io('post', 1, { read: () => 0xff, write: () => undefined }), POST_PORT);
    for (const space of ['memory', 'io'] as const) {
      machine.bus[space].on('unassigned', (access) => this.#report({ kind: 'unassigned', space, access }));
    }
    this.#routed = [];
    const specs = opts.devices ?? [];
    specs.forEach((spec, i) => {
      const dev = machine.addDevice(spec.bdf, {
        ...(spec.vendorId !== undefined ? { vendorId: spec.vendorId } : {}),
        ...(spec.deviceId !== undefined ? { deviceId: spec.deviceId } : {}),
        log: null,
      });
      dev.on('device-error', (event) => this.#report({ kind: 'device', event }));
      const slot = spec.slot ?? 3 + i;
      this.host.attach(slot, 0, dev);
      this.#routed.push({ dev, slot });
    });
    this.devices = this.#routed.map((r) => r.dev);
    // A BAR section the IOMMU cannot map (a sub-page MSI-X split, say) is skipped, as QEMU skips it:
    // peer-to-peer DMA to it fails, nothing else does.
    // The listener re-plans (and skips again) on every commit that touches the section: each
    // distinct skip is reported once.
    machine.dma?.on('warning', (skip) => {
      const key = `${skip.region} ${skip.start} ${skip.size} ${skip.reason}`;
      if (this.#skips.has(key)) return;
      this.#skips.add(key);
      this.#report({ kind: 'dma', what: 'skip', skip });
    });
    machine.dma?.on('dma-error', (error) => this.#report({ kind: 'dma', what: 'error', error }));
    machine.dma?.on('fatal', (error) => this.#report({ kind: 'dma', what: 'fatal', error }));
  }

  /**
   * Build the machine and load the kernel for its first boot (the vCPUs start with {@link run}).
   * Bad options are RangeErrors/TypeErrors or VmmErrors naming what is wrong; a device that cannot
   * be opened is the VfioError of its open. Nothing is left open when this throws.
   */
  static create(opts: PcMachineOptions): PcMachine {
    if (opts === null || typeof opts !== 'object') throw new TypeError('PcMachine.create needs options');
    const ramSize = opts.ramSize ?? 256 * MiB;
    if (!Number.isSafeInteger(ramSize) || ramSize < 32 * MiB || ramSize > PCI_HOLE || ramSize % MiB !== 0) {
      throw new RangeError(`ramSize ${String(ramSize)} must be a whole number of MiB in [32 MiB, 3 GiB]`);
    }
    const cpus = opts.cpus ?? 1;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 16) {
      throw new RangeError(`cpus ${String(cpus)} must be an integer in [1, 16]`);
    }
    for (const k of ['onOutput', 'onLine', 'onReport', 'onAccess'] as const) {
      if (opts[k] !== undefined && typeof opts[k] !== 'function')
        throw new TypeError(`${k} must be a function`);
    }
    if (opts.devices !== undefined && !Array.isArray(opts.devices))
      throw new TypeError('devices must be an array');
    if (opts.cmdline !== undefined && typeof opts.cmdline !== 'string')
      throw new TypeError('cmdline must be a string');
    // Inputs first: a wrong path or a file that is no bzImage fails before anything is opened.
    const files = {
      kernel: readInput('kernel', opts.kernel),
      initrd: opts.initrd !== undefined ? readInput('initramfs', opts.initrd) : undefined,
    };
    parseBzImage(files.kernel);
    const kvm = Kvm.open({
      ...(opts.kvmPath !== undefined ? { path: opts.kvmPath } : {}),
      require: ['IRQCHIP', 'IRQ_ROUTING', 'IRQFD', 'IRQFD_RESAMPLE', 'SIGNAL_MSI', 'USER_MEMORY'],
    });
    let machine: Machine | undefined;
    let pc: PcMachine | undefined;
    try {
      machine = Machine.create({
        ramSize,
        pciHole: { start: PCI_HOLE, size: GiB },
        bus: { log: null },
        dma: { log: null },
        hugepages: opts.hugepages ?? false,
      });
      pc = new PcMachine(opts, files, machine, kvm);
      pc.#firmware();
      pc.#boot = pc.#start();
      return pc;
    } catch (e) {
      try {
        if (pc) pc.close();
        else machine?.close();
      } finally {
        kvm.close();
      }
      throw e;
    }
  }

  /** The current boot's VM (null once closed). */
  get vm(): Vm | null {
    return this.#boot?.vm ?? null;
  }

  /** The current boot's vCPUs. */
  get vcpus(): readonly Vcpu[] {
    return this.#boot?.vcpus ?? [];
  }

  /** Where the current boot put the kernel, initramfs and command line. */
  get layout(): LinuxBootLayout | null {
    return this.#boot?.layout ?? null;
  }

  /** The BARs as the machine's firmware placed them at the last boot. */
  get bars(): readonly PlacedBar[] {
    return this.#bars;
  }

  /** How many boots so far (1 after create). */
  get boots(): number {
    return this.#boots;
  }

  /** Reports so far, by kind. */
  get reportCounts(): Readonly<Record<PcReport['kind'], number>> {
    return {
      device: this.#counts.get('device') ?? 0,
      unassigned: this.#counts.get('unassigned') ?? 0,
      interrupt: this.#counts.get('interrupt') ?? 0,
      'irq-line': this.#counts.get('irq-line') ?? 0,
      reset: this.#counts.get('reset') ?? 0,
      dma: this.#counts.get('dma') ?? 0,
      access: this.#counts.get('access') ?? 0,
    };
  }

  /**
   * Exits since creation: MMIO and port accesses served in JavaScript (`mmio`, `io`), those the
   * vCPU threads served themselves from the exit table (`nativeMmio`, `nativeIo`), and how many of
   * the latter failed (`faults`, each also reported as an `access` report).
   */
  get exits(): {
    readonly mmio: number;
    readonly io: number;
    readonly nativeMmio: number;
    readonly nativeIo: number;
    readonly faults: number;
  } {
    const now = this.#closed ? undefined : this.#boot?.set.stats;
    const t = this.#nativeTotals;
    return {
      ...this.#exits,
      nativeMmio: t.mmio + (now?.mmio ?? 0),
      nativeIo: t.pio + (now?.pio ?? 0),
      faults: t.faults + (now?.faults ?? 0),
    };
  }

  /** Port and MMIO exits the vCPUs could not serve (string port I/O). */
  get unservedExits(): number {
    return this.#unserved + (this.#closed ? 0 : (this.#boot?.set.unservedExits ?? 0));
  }

  /** What the machine holds now: after {@link close}, all zeros. */
  resources(): PcResources {
    const vm = this.#boot?.vm;
    return {
      memorySlots: vm?.slots.used ?? 0,
      irqfds: vm?.assignments.filter((a) => a.kind === 'irqfd').length ?? 0,
      ioeventfds: vm?.assignments.filter((a) => a.kind === 'ioeventfd').length ?? 0,
      dmaMappings: this.machine.container?.closed === false ? this.machine.container.dmaMappings().length : 0,
      openDevices: this.devices.filter((d) => !d.closed).length,
      vcpus: vm?.vcpus.length ?? 0,
    };
  }

  /**
   * Run the vCPUs, each on its own thread, until the guest resets the machine, {@link stop} or
   * {@link close} is called, the timeout passes, or KVM reports an error; the vCPUs are paused
   * when it resolves. After a reset, {@link reboot} boots the guest again.
   */
  async run(opts: PcRunOptions = {}): Promise<PcExit> {
    this.#checkOpen('run');
    if (this.#running)
      throw new VmmError('EBUSY', 'the machine is already running', 'await the run in progress');
    const timeout = opts.timeoutMs ?? Infinity;
    if (typeof timeout !== 'number' || !(timeout > 0))
      throw new RangeError(`timeoutMs ${String(timeout)} must be positive`);
    const boot = this.#boot;
    if (boot === null) {
      throw new VmmError(
        'ENOBOOT',
        'nothing to run: the last reboot failed',
        'reboot again with inputs that load',
      );
    }
    if (this.#pending !== null) return this.#take();
    this.#running = true;
    try {
      const end = await boot.set.run({
        ...(Number.isFinite(timeout) ? { timeoutMs: timeout } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      if (this.#closed) return { reason: 'stopped' };
      if (this.#pending !== null) return this.#take();
      return this.#exitOf(end);
    } finally {
      this.#running = false;
    }
  }

  /** Ask a run in progress to end (with `stopped`): the vCPUs are paused, not lost. */
  stop(): void {
    if (this.#pending === null) this.#pending = { reason: 'stopped' };
    this.#boot?.set.interrupt();
  }

  /**
   * Reset and boot again, as after a PC's reset: a new VM and vCPUs, every device reset
   * (`VfioPciDevice.reset('guest')`) and its BARs placed again, guest RAM cleared and the kernel
   * loaded again, with `opts.cmdline` if given. Not while running.
   */
  reboot(opts: { cmdline?: string } = {}): void {
    this.#checkOpen('reboot');
    if (opts.cmdline !== undefined && typeof opts.cmdline !== 'string') {
      throw new TypeError('reboot: cmdline must be a string');
    }
    if (this.#running)
      throw new VmmError('EBUSY', 'reboot while the machine is running', 'await run() first');
    const old = this.#boot;
    this.#boot = null;
    this.#pending = null;
    old?.close();
    for (const d of this.devices) {
      // As QEMU: a device with no reset method (ENORESET) still has its guest-visible state reset,
      // and the machine boots on; its driver resets the chip when it probes.
      try {
        d.reset('guest');
      } catch (error) {
        if ((error as { code?: string }).code !== 'ENORESET') throw error;
        this.#report({ kind: 'reset', bdf: d.bdf, error: error as Error });
      }
    }
    this.host.reset();
    this.uart.reset();
    this.#lowRam().fill(0);
    if (opts.cmdline !== undefined) this.#cmdline = opts.cmdline;
    this.#firmware();
    this.#boot = this.#start();
  }

  /**
   * Stop everything and release it: the VM (vCPUs, irqfds, slots), the DMA mappings, the devices,
   * the container, guest RAM and the KVM fd. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const boot = this.#boot;
    allSteps([() => boot?.close(), () => this.machine.close(), () => this.kvm.close()]);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- boot -------------------------------------------------------------------------------------

  /** What firmware does before the kernel: place the BARs (writing each INTx line) and the MP table. */
  #firmware(): void {
    this.#bars = placeBars(this.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
  }

  #start(): Boot {
    const ram = this.machine.ram;
    const bytes = this.#lowRam();
    writeMpTable(bytes.subarray(MPTABLE_START), MPTABLE_START, {
      cpus: this.cpus,
      intx: pciIntxRoutes(this.host),
    });
    const layout = loadLinux({
      ram: bytes,
      kernel: this.#kernel,
      cmdline: this.#cmdline,
      ...(this.#initrd ? { initrd: this.#initrd } : {}),
      e820: pcE820({ ramSize: ram.length, pciHoleStart: PCI_HOLE }),
    });

    const undo: (() => void)[] = [];
    const closeAll = (): void => allSteps(undo.splice(0).reverse());
    try {
      const vm = this.kvm.createVm();
      undo.push(() => vm.close());
      vm.setTssAddr(TSS_ADDR);
      vm.createIrqchip();
      vm.createPit();
      // Each RAM range already knows its offset in guest RAM, which is what a slot takes.
      for (const r of this.machine.ramRanges) {
        vm.addSlot({ guestAddress: r.gpa, size: r.size, memory: ram, offset: r.offset, name: 'ram' });
      }
      const unlisten = this.machine.bus.memory.addListener(new KvmMemoryListener(vm));
      undo.push(unlisten);
      // The ranges the vCPU threads serve themselves, kept equal to the flat views.
      const table = new ExitTable();
      undo.push(() => table.close());
      const device = (bdf: string): Device | null => {
        const d = this.devices.find((x) => x.bdf === bdf)?.device;
        return d instanceof Device ? d : null;
      };
      for (const [space, as] of [
        ['mmio', this.machine.bus.memory],
        ['pio', this.machine.bus.io],
      ] as const) {
        const l = new ExitTableListener(table, space, device);
        const off = as.addListener(l);
        undo.push(() => {
          off();
          l.clear();
        });
      }
      for (const d of this.devices) {
        const g = d.group;
        if (g !== null) vm.addVfioFile(g);
      }
      const routes = new MsiRoutes(vm);
      for (const { dev } of this.#routed) {
        const msi = new PciMsiRouting(
          dev,
          {
            update: (k, m, t) => routes.update(k, m, t),
            signalMsi: (lo, hi, data) => vm.signalMsi(lo, hi, data),
          },
          { onError: (error, key) => this.#report({ kind: 'interrupt', bdf: dev.bdf, key, error }) },
        );
        undo.push(() => msi.close());
      }
      undo.push(() => routes.clear());
      for (const { dev, slot } of this.#routed) {
        const pin = dev.irq.pin;
        if (pin < 1 || pin > 4) continue;
        const intx = new PciIntxRouting(dev, vm, pciIntxGsi(slot, pin), {
          onError: (error) =>
            this.#report({ kind: 'interrupt', bdf: dev.bdf, key: `${dev.bdf} intx`, error }),
        });
        undo.push(() => intx.close());
      }
      const vcpus: Vcpu[] = [];
      for (let id = 0; id < this.cpus; id++) {
        const vcpu = vm.createVcpu(id);
        vcpus.push(vcpu);
        // Application processors keep their power-on registers: they wait for the boot CPU's
        // INIT/SIPI in the in-kernel APIC.
        setupBootVcpu(vcpu, id === 0 ? layout.cpu : null, {
          supportedCpuid: this.#supportedCpuid,
          cpus: this.cpus,
          tscDeadline: this.#tscDeadline,
        });
      }
      const exits = this.#exits;
      const trace = this.#onAccess;
      // Counted per exit, so the count is current inside the console callbacks the exits cause.
      const routing: ExitRouting = {
        memory: this.machine.bus.memory,
        io: this.machine.bus.io,
        onAccess: (a) => {
          if (a.space === 'io') exits.io++;
          else exits.mmio++;
          trace?.(a);
        },
      };
      const set = new VcpuSet(vcpus, {
        routing,
        table,
        onFault: (vcpu, f) =>
          this.#report({
            kind: 'access',
            vcpu,
            space: f.space,
            address: f.address,
            size: f.size,
            isWrite: f.isWrite,
            code: f.code,
          }),
      });
      // Threads first: nothing may run while the VM and its slots go away.
      undo.push(() => {
        set.stop();
        const s = set.stats;
        this.#nativeTotals.mmio += s.mmio;
        this.#nativeTotals.pio += s.pio;
        this.#nativeTotals.faults += s.faults;
        this.#unserved += set.unservedExits;
      });
      this.#boots++;
      return { vm, vcpus, layout, routes, set, close: closeAll };
    } catch (e) {
      closeAll();
      throw e;
    }
  }

  /** Guest RAM from address 0, as bytes (all of it: this machine keeps RAM below the PCI hole). */
  #lowRam(): Uint8Array {
    const v = this.machine.gpaView(0, this.machine.ram.length);
    return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  }

  // ---- runtime ----------------------------------------------------------------------------------

  #exitOf(end: VcpuSetEnd): PcExit {
    switch (end.reason) {
      case 'stopped':
      case 'interrupted':
        return { reason: 'stopped' };
      case 'timeout':
        return { reason: 'timeout' };
      case 'error':
        return { reason: 'error', error: end.error };
      case 'guest-exit':
        if (end.exit.kind === 'shutdown') return { reason: 'reset', by: 'triple-fault' };
        if (end.exit.kind === 'system-event') return { reason: 'reset', by: 'system-event' };
        return { reason: 'error', exit: end.exit };
    }
  }

  #take(): PcExit {
    const p = this.#pending!;
    this.#pending = null;
    return p;
  }

  #requestReset(by: 'i8042' | 'reset-control'): void {
    if (this.#pending === null) this.#pending = { reason: 'reset', by };
    this.#boot?.set.interrupt();
  }

  #irqLine(irq: number, level: boolean): void {
    const vm = this.#boot?.vm;
    if (!vm || vm.closed) return;
    try {
      vm.irqLine(irq, level);
    } catch (e) {
      this.#report({ kind: 'irq-line', irq, error: e as Error });
    }
  }

  #report(r: PcReport): void {
    this.#counts.set(r.kind, (this.#counts.get(r.kind) ?? 0) + 1);
    this.#onReport?.(r);
  }

  #checkOpen(op: string): void {
    if (this.#closed) {
      throw new VmmError('ECLOSED', `${op}: the machine is closed`, 'create a new PcMachine');
    }
  }
}
