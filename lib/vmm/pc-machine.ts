/**
 * PcMachine: the reference machine of lib/vmm, a small PC that boots Linux on KVM with vfio-pci
 * devices passed through, assembled from the package's pieces:
 * - guest RAM, the PCI bus, the VFIO container and the DMA listener: lib/dma's `Machine`;
 * - per boot a fresh KVM VM (pc-boot.ts): RAM slots, the in-kernel irqchip and PIT, the KVM memory
 *   listener, MSI/MSI-X and INTx on irqfds, the exit table, the vCPU threads;
 * - the legacy ports (pc-legacy-io.ts): console, configuration mechanism #1, reset lines, CMOS;
 * - BAR placement as firmware does it, an MP table, e820 and Linux's 64-bit boot protocol;
 * - its options and reports (pc-options.ts).
 *
 * Guest RAM, the devices and their DMA mappings stay across boots; the devices are reset and
 * their BARs placed again, as a PC's reset and firmware do.
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
 *
 * Why this file is past 400 lines: it is the machine's lifecycle, each step in a synchronous and an
 * off-the-loop form (create/open, close/closeAsync) over the same private state; what each step
 * does lives in the pc-*.ts files beside it.
 */
import { transaction } from '../memory';
import { Machine } from './machine';
import { Kvm, type CpuidEntry, type RoutedAccess, type Vcpu, type VcpuSet, type Vm } from '../kvm';
import type { VfioPciDevice } from '../pci';
import { DEFAULT_PCI_WINDOWS, placeBars, type PlacedBar } from './bar-placement';
import { parseBzImage } from './boot/bzimage';
import type { LinuxBootLayout } from './boot/load-linux';
import { VmmError } from './errors';
import {
  allSteps,
  lowRam,
  startBoot,
  startBootAsync,
  type Boot,
  type BootContext,
  type RoutedDevice,
} from './pc-boot';
import { addLegacyPorts } from './pc-legacy-io';
import { PcReports } from './pc-reports';
import { ExitCounter, pcExitOf, type PcExitCounts } from './pc-run';
import {
  checkPcOptions,
  checkPcShape,
  deviceOptions,
  readInputAsync,
  type PcDeviceSpec,
  DEFAULT_CMDLINE,
  GiB,
  PCI_HOLE,
  type PcExit,
  type PcMachineOptions,
  type PcReport,
  type PcResources,
  type PcRunOptions,
} from './pc-options';
import { PciHostBridge } from './pci-host';
import { pciIntxGsi } from './intx';
import { COM1_IRQ, Uart16550 } from './uart';

export type {
  PcDeviceSpec,
  PcExit,
  PcMachineOptions,
  PcReport,
  PcResources,
  PcRunOptions,
} from './pc-options';

/** The KVM a PcMachine needs, with the capabilities it relies on checked. */
function openKvm(opts: PcMachineOptions): Kvm {
  return Kvm.open({
    ...(opts.kvmPath !== undefined ? { path: opts.kvmPath } : {}),
    require: ['IRQCHIP', 'IRQ_ROUTING', 'IRQFD', 'IRQFD_RESAMPLE', 'SIGNAL_MSI', 'USER_MEMORY'],
  });
}

/** Guest RAM below the PCI hole at 3 GiB, and the bus. */
function createMachine(opts: PcMachineOptions, ramSize: number): Machine {
  return Machine.create({
    ramSize,
    pciHole: { start: PCI_HOLE, size: GiB },
    bus: { log: null },
    dma: { log: null },
    hugepages: opts.hugepages ?? false,
  });
}

/** Guest RAM cleared per turn of the event loop at a reboot: a few ms of memset each. */
const CLEAR_CHUNK = 16 * 2 ** 20;

/** Undo a create or open that failed halfway: what was built, then the KVM fd. */
function abandon(built: { close(): void } | undefined, kvm: Kvm): void {
  try {
    built?.close();
  } finally {
    kvm.close();
  }
}

export class PcMachine implements Disposable {
  readonly machine: Machine;
  readonly kvm: Kvm;
  readonly uart: Uart16550;
  readonly host: PciHostBridge;
  readonly cpus: number;
  readonly #routed: RoutedDevice[] = [];
  readonly #kernel: Uint8Array;
  readonly #initrd: Uint8Array | undefined;
  #cmdline: string;
  readonly #reports: PcReports;
  readonly #onAccess: ((a: RoutedAccess) => void) | undefined;
  readonly #supportedCpuid: CpuidEntry[];
  readonly #tscDeadline: boolean;
  readonly #vcpuNice: number;
  #bars: PlacedBar[] = [];
  #boot: Boot | null = null;
  #boots = 0;
  #pending: PcExit | null = null;
  readonly #exits = new ExitCounter();
  #running = false;
  #closed = false;

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
    this.#cmdline = opts.cmdline ?? DEFAULT_CMDLINE;
    this.#reports = new PcReports(opts.onReport);
    this.#onAccess = opts.onAccess;
    this.#supportedCpuid = kvm.supportedCpuid();
    this.#tscDeadline = kvm.hasCapability('TSC_DEADLINE_TIMER');
    this.#vcpuNice = opts.vcpuNice ?? 0;
    this.uart = new Uart16550({
      onOutput: opts.onOutput,
      onLine: opts.onLine,
      onIrq: (level) => this.#irqLine(COM1_IRQ, level),
    });
    this.host = new PciHostBridge({ onReset: () => this.#requestReset('reset-control') });
    addLegacyPorts(machine.bus.io.root, {
      uart: this.uart,
      host: this.host,
      onI8042Reset: () => this.#requestReset('i8042'),
    });
    this.#reports.watchBus(machine);
  }

  /** The passed-through devices, in the order of the options. */
  get devices(): readonly VfioPciDevice[] {
    return this.#routed.map((r) => r.dev);
  }

  /** Put an opened device in its slot. */
  #attach(dev: VfioPciDevice, spec: PcDeviceSpec, i: number): void {
    this.#reports.watchDevice(dev);
    const slot = spec.slot ?? 3 + i;
    this.host.attach(slot, 0, dev);
    this.#routed.push({ dev, slot });
    if (i === 0) this.#reports.watchDma(this.machine);
  }

  /**
   * Build the machine and load the kernel for its first boot (the vCPUs start with {@link run}).
   * Bad options are RangeErrors/TypeErrors or VmmErrors naming what is wrong; a device that cannot
   * be opened is the VfioError of its open. Nothing is left open when this throws.
   */
  static create(opts: PcMachineOptions): PcMachine {
    // Inputs first: a wrong path or a file that is no bzImage fails before anything is opened.
    const { ramSize, kernel, initrd } = checkPcOptions(opts);
    const files = { kernel, initrd };
    parseBzImage(files.kernel);
    const kvm = openKvm(opts);
    let machine: Machine | undefined;
    let pc: PcMachine | undefined;
    try {
      machine = createMachine(opts, ramSize);
      pc = new PcMachine(opts, files, machine, kvm);
      for (const [i, spec] of (opts.devices ?? []).entries())
        pc.#attach(machine.addDevice(spec.bdf, deviceOptions(spec)), spec, i);
      pc.#firmware();
      pc.#boot = pc.#start();
      return pc;
    } catch (e) {
      abandon(pc ?? machine, kvm);
      throw e;
    }
  }

  /**
   * {@link create}, with the long kernel work off the event loop: the kernel and initramfs are read
   * asynchronously, devices are opened and guest RAM is pinned for the IOMMU on the libuv thread
   * pool, and the event loop gets a turn between the steps (each device, BAR placement, each step of
   * the VM's set-up).
   */
  static async open(opts: PcMachineOptions): Promise<PcMachine> {
    const checked = checkPcShape(opts);
    const [kernel, initrd] = await Promise.all([
      readInputAsync('kernel', opts.kernel),
      opts.initrd !== undefined ? readInputAsync('initramfs', opts.initrd) : undefined,
    ]);
    parseBzImage(kernel);
    const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
    const kvm = openKvm(opts);
    let machine: Machine | undefined;
    let pc: PcMachine | undefined;
    try {
      await turn();
      machine = createMachine(opts, checked.ramSize);
      pc = new PcMachine(opts, { kernel, initrd }, machine, kvm);
      for (const [i, spec] of (opts.devices ?? []).entries()) {
        await turn();
        pc.#attach(await machine.addDeviceAsync(spec.bdf, deviceOptions(spec)), spec, i);
      }
      await turn();
      pc.#firmware();
      await turn();
      pc.#boot = await pc.#startAsync(turn);
      return pc;
    } catch (e) {
      abandon(pc ?? machine, kvm);
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
    return this.#reports.counts;
  }

  /**
   * Exits since creation: MMIO and port accesses served in JavaScript (`mmio`, `io`), those the
   * vCPU threads served themselves from the exit table (`nativeMmio`, `nativeIo`), and how many of
   * the latter failed (`faults`, each also reported as an `access` report).
   */
  get exits(): PcExitCounts {
    return this.#exits.counts(this.#liveSet());
  }

  /** Port and MMIO exits the vCPUs could not serve (string port I/O). */
  get unservedExits(): number {
    return this.#exits.unserved(this.#liveSet());
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
      return pcExitOf(end);
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
    this.#beginReboot(opts);
    for (const d of this.devices) this.#resetDevice(d, () => d.reset('guest'));
    this.#resetBoard();
    lowRam(this.machine).fill(0);
    this.#firmware();
    this.#boot = this.#start();
  }

  /**
   * {@link reboot} without holding the event loop: device resets run on the libuv thread pool, guest
   * RAM is cleared in pieces, and the new boot is set up in steps with a turn for the loop between.
   */
  async rebootAsync(opts: { cmdline?: string } = {}): Promise<void> {
    this.#beginReboot(opts);
    this.#running = true; // nothing else may start, reboot or run while this one is under way
    try {
      const turn = async (): Promise<void> => {
        await new Promise<void>((resolve) => setImmediate(resolve));
        this.#checkOpen('rebootAsync');
      };
      for (const d of this.devices) {
        let failure: unknown;
        await d.resetAsync('guest').catch((e: unknown) => (failure = e));
        this.#resetDevice(d, () => {
          if (failure !== undefined) throw failure;
        });
        await turn();
      }
      this.#resetBoard();
      const ram = lowRam(this.machine);
      for (let at = 0; at < ram.length; at += CLEAR_CHUNK) {
        ram.fill(0, at, Math.min(at + CLEAR_CHUNK, ram.length));
        await turn();
      }
      this.#firmware();
      await turn();
      this.#boot = await this.#startAsync(turn);
    } finally {
      this.#running = false;
    }
  }

  #beginReboot(opts: { cmdline?: string }): void {
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
    if (opts.cmdline !== undefined) this.#cmdline = opts.cmdline;
  }

  /**
   * Reset one device with `reset`. As QEMU: a device with no reset method (ENORESET) still has its
   * guest-visible state reset, and the machine boots on; its driver resets the chip when it probes.
   */
  #resetDevice(d: VfioPciDevice, reset: () => void): void {
    try {
      reset();
    } catch (error) {
      if ((error as { code?: string }).code !== 'ENORESET') throw error;
      this.#report({ kind: 'reset', bdf: d.bdf, error: error as Error });
    }
  }

  /** The board's own devices back to their power-on state. */
  #resetBoard(): void {
    this.host.reset();
    this.uart.reset();
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

  /**
   * {@link close} without holding the event loop: the vCPU threads are stopped and the VM closed
   * first, then the devices' fds are closed on the libuv thread pool (the kernel resets each
   * device then), with a turn for the loop between the steps. Idempotent.
   */
  async closeAsync(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const errors: unknown[] = [];
    try {
      this.#boot?.close();
    } catch (e) {
      errors.push(e);
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      await this.machine.closeAsync();
    } catch (e) {
      errors.push(e);
    }
    try {
      this.kvm.close();
    } catch (e) {
      errors.push(e);
    }
    if (errors.length > 0) throw errors[0];
  }

  [Symbol.dispose](): void {
    this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.closeAsync();
  }

  // ---- boot -------------------------------------------------------------------------------------

  /** What firmware does before the kernel: place the BARs (writing each INTx line) and the MP table. */
  /** BAR placement as firmware does it, seen by the listeners as one change of the flat views. */
  #firmware(): void {
    transaction(() => {
      this.#bars = placeBars(this.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
    });
  }

  #start(): Boot {
    const boot = startBoot(this.#bootContext());
    this.#boots++;
    return boot;
  }

  async #startAsync(between: () => Promise<void>): Promise<Boot> {
    const boot = await startBootAsync(this.#bootContext(), between);
    this.#boots++;
    return boot;
  }

  #bootContext(): BootContext {
    return {
      kvm: this.kvm,
      machine: this.machine,
      host: this.host,
      routed: this.#routed,
      cpus: this.cpus,
      kernel: this.#kernel,
      initrd: this.#initrd,
      cmdline: this.#cmdline,
      supportedCpuid: this.#supportedCpuid,
      tscDeadline: this.#tscDeadline,
      vcpuNice: this.#vcpuNice,
      routing: this.#exits.routing(this.machine, this.#onAccess),
      report: (r) => this.#report(r),
      onStopped: (set) => this.#exits.add(set),
    };
  }

  /** The running boot's vCPU set (its counts are folded in once closed). */
  #liveSet(): VcpuSet | null {
    return this.#closed ? null : (this.#boot?.set ?? null);
  }

  // ---- runtime ----------------------------------------------------------------------------------

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
    this.#reports.report(r);
  }

  #checkOpen(op: string): void {
    if (this.#closed) {
      throw new VmmError('ECLOSED', `${op}: the machine is closed`, 'create a new PcMachine');
    }
  }
}
