/**
 * PcMachine: the reference machine of lib/vmm, a small PC that boots Linux on KVM with vfio-pci
 * devices passed through. This file is its public surface and lifecycle; the work is beside it:
 * - guest RAM, the PCI bus, the VFIO container and the DMA listener: `Machine` (machine.ts), built
 *   with the KVM fd by pc-parts.ts;
 * - the boots (pc-boots.ts): firmware's BAR placement, a PC's reset between boots, and per boot a
 *   fresh KVM VM (pc-boot.ts) with its slots, irqchip, irqfds, exit table and vCPU threads;
 * - the legacy ports (pc-legacy-io.ts), the options (pc-options.ts), the reports (pc-reports.ts)
 *   and what a run's end means (pc-run.ts).
 *
 * Guest RAM, the devices and their DMA mappings stay across boots. Each vCPU runs on its own
 * thread (lib/kvm's VcpuSet): the event loop is never held by the guest. Accesses KVM cannot map
 * directly are served on the vCPU threads from the exit table where the flat view allows it; the
 * rest (configuration cycles, the MSI-X table, the UART, quirks, unassigned space) are handed to
 * this thread, one at a time. Nothing the guest does throws: what it does wrong is counted and
 * reported (the `report` event), and a run ends with a {@link PcExit} saying why. The console and
 * the reports are node:events events (`output`, `line`, `report`).
 *
 * Each long step has a synchronous form and an asynchronous one that leaves the event loop free
 * (create/open, reboot/rebootAsync, close/closeAsync).
 *
 * Why this file is past 400 lines: it is the whole public surface with its documentation (the
 * lifecycle in both forms, the getters, the events); each piece of work is in the files above.
 */
import { EventEmitter } from 'node:events';
import { ArgRangeError, ArgTypeError } from '../base/error';
import { forwardGuestErrors, type GuestError, type GuestErrorSink } from '../base/guest-error';
import { Machine } from './machine';
import { Kvm, type CpuidEntry, type RoutedAccess, type Vcpu, type VcpuSet, type Vm } from '../kvm';
import type { VfioPciDevice } from '../pci';
import type { PlacedBar } from './bar-placement';
import { parseBzImage } from './boot/bzimage';
import type { LinuxBootLayout } from './boot/load-linux';
import { VmmError } from './errors';
import { DeferredMappings } from './deferred-mappings';
import { allSteps, allStepsAsync, turn } from '../base/steps';
import type { RoutedDevice } from './pc-boot';
import { abandon, createMachine, createMachineAsync, openKvm } from './pc-parts';
import { PcBoots } from './pc-boots';
import { addLegacyPorts } from './pc-legacy-io';
import { PcReports } from './pc-reports';
import { ExitCounter, pcExitOf, resourcesOf, type PcExitCounts } from './pc-run';
import {
  checkPcOptions,
  checkPcShape,
  deviceOptions,
  readInputAsync,
  type PcDeviceSpec,
  DEFAULT_CMDLINE,
  type PcExit,
  type PcMachineOptions,
  type PcReport,
  type PcResources,
  type PcRunOptions,
} from './pc-options';
import { PciRootBus } from './pci-root-bus';
import { COM1_IRQ, Uart16550 } from './uart';
import { UartOnVcpuThreads } from './uart-vcpu';

export type { PcExitCounts } from './pc-run';
export type {
  PcDeviceSpec,
  PcExit,
  PcMachineOptions,
  PcReport,
  PcResources,
  PcRunOptions,
} from './pc-options';

/** `signal` checked to be an AbortSignal (or absent). */
function checkSignal(signal: AbortSignal | undefined): AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new ArgTypeError('signal must be an AbortSignal');
  return signal;
}

/** The events of a {@link PcMachine} (also given as the `onOutput`, `onLine` and `onReport` options). */
export type PcMachineEvents = {
  /** Bytes the guest wrote to its serial console. */
  output: [Uint8Array];
  /** Each complete line of the serial console. */
  line: [string];
  /**
   * What the machine absorbed on the guest's behalf (see {@link PcReport}).
   * @deprecated listen to `guest-error`: the same reports, from every layer, as GuestErrors
   */
  report: [PcReport];
  /** What the guest did wrong, from any layer: the machine sink's `guest-error` event. */
  'guest-error': [GuestError];
};

/** What every boot's vCPUs are set up from: asked of KVM once, a step of its own in open. */
interface HostCpu {
  readonly supportedCpuid: CpuidEntry[];
  readonly tscDeadline: boolean;
}

function hostCpuOf(kvm: Kvm): HostCpu {
  return { supportedCpuid: kvm.supportedCpuid(), tscDeadline: kvm.hasCapability('TSC_DEADLINE_TIMER') };
}

/**
 * A small PC on KVM that boots a Linux bzImage with vfio-pci devices passed through: open it with
 * {@link PcMachine.open}, boot with {@link PcMachine.run}, end with {@link PcMachine.closeAsync}.
 */
export class PcMachine extends EventEmitter<PcMachineEvents> implements Disposable {
  /** Guest RAM, the PCI bus (system memory and ports), the VFIO container and the DMA listener. */
  readonly machine: Machine;
  /** The KVM node opened for it (`kvmPath`); each boot's VM is created on it. */
  readonly kvm: Kvm;
  /** The guest console: a 16550 at port 0x3f8 (COM1, `ttyS0`) on IRQ 4. */
  readonly uart: Uart16550;
  /** The PCI host bridge: configuration ports 0xcf8/0xcfc and the reset control register 0xcf9. */
  readonly host: PciRootBus;
  /** How many vCPUs each boot has (the `cpus` option, default 1). */
  readonly cpus: number;
  readonly #routed: RoutedDevice[] = [];
  readonly #reports: PcReports;
  readonly #onAccess: ((a: RoutedAccess) => void) | undefined;
  readonly #boots: PcBoots;
  readonly #uartThreads: UartOnVcpuThreads | null;
  #pending: PcExit | null = null;
  readonly #exits = new ExitCounter();
  readonly #mappings = new DeferredMappings((error) => this.#mappingsFailed(error));
  #running = false;
  #closed = false;

  private constructor(
    opts: PcMachineOptions,
    files: { kernel: Uint8Array; initrd: Uint8Array | undefined },
    machine: Machine,
    kvm: Kvm,
    hostCpu: HostCpu,
  ) {
    super();
    this.machine = machine;
    this.kvm = kvm;
    this.cpus = opts.cpus ?? 1;
    // The option callbacks are listeners like any other: `on('line', fn)` later is the same.
    if (opts.onOutput) this.on('output', opts.onOutput);
    if (opts.onLine) this.on('line', opts.onLine);
    this.#reports = new PcReports(this, machine.guestErrors, machine.bus.io.name);
    forwardGuestErrors(this, machine.guestErrors);
    if (opts.onReport) this.on('report', opts.onReport);
    this.#onAccess = opts.onAccess;
    this.uart = new Uart16550({
      onOutput: (bytes) => this.emit('output', bytes),
      wantsOutput: () => this.listenerCount('output') > 0,
      onLine: (line) => this.emit('line', line),
      onIrq: (level) => this.#irqLine(COM1_IRQ, level),
    });
    // The console's THR writes and LSR and MSR reads are served on the vCPU threads (uart-vcpu.ts).
    this.#uartThreads = opts.consoleOnVcpuThreads === false ? null : new UartOnVcpuThreads(this.uart);
    this.host = new PciRootBus({ onReset: () => this.#requestReset('reset-control') });
    addLegacyPorts(machine.bus.io.root, {
      uart: this.#uartThreads ?? this.uart,
      host: this.host,
      onI8042Reset: () => this.#requestReset('i8042'),
    });
    this.#boots = new PcBoots(
      {
        kvm,
        machine,
        host: this.host,
        routed: this.#routed,
        cpus: this.cpus,
        kernel: files.kernel,
        initrd: files.initrd,
        supportedCpuid: hostCpu.supportedCpuid,
        tscDeadline: hostCpu.tscDeadline,
        vcpuNice: opts.vcpuNice ?? 0,
        routing: () => this.#exits.routing(this.machine, this.#onAccess),
        report: (r) => this.#report(r),
        onStopped: (set) => this.#exits.add(set),
        mappingsPending: () => this.#mappings.pending,
        resetBoard: () => {
          this.host.reset();
          this.#uartThreads?.drain();
          this.uart.reset();
        },
      },
      opts.cmdline ?? DEFAULT_CMDLINE,
    );
  }

  /** The passed-through devices, in the order of the options. */
  get devices(): readonly VfioPciDevice[] {
    return this.#routed.map((r) => r.dev);
  }

  /** Put an opened device in its slot. */
  #attach(dev: VfioPciDevice, spec: PcDeviceSpec, i: number): void {
    const slot = spec.slot ?? 3 + i;
    this.host.attach(slot, 0, dev);
    this.#routed.push({ dev, slot });
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
      pc = new PcMachine(opts, files, machine, kvm, hostCpuOf(kvm));
      for (const [i, spec] of (opts.devices ?? []).entries())
        pc.#attach(machine.addDevice(spec.bdf, deviceOptions(spec)), spec, i);
      pc.#boots.first();
      return pc;
    } catch (e) {
      abandon(pc ?? machine, kvm);
      throw e;
    }
  }

  /**
   * {@link create}, with the long kernel work off the event loop: the kernel and initramfs are read
   * asynchronously, devices are opened and guest RAM is pinned for the IOMMU on the libuv thread
   * pool, and the event loop gets a turn between the steps (each device, BAR placement, the VM's
   * set-up).
   *
   * `ctl.signal` aborts it between two steps: what was built is closed and the promise rejects with
   * the signal's reason.
   */
  static async open(opts: PcMachineOptions, ctl: { signal?: AbortSignal } = {}): Promise<PcMachine> {
    const checked = checkPcShape(opts);
    const signal = checkSignal(ctl.signal);
    signal?.throwIfAborted();
    const [kernel, initrd] = await Promise.all([
      readInputAsync('kernel', opts.kernel),
      opts.initrd !== undefined ? readInputAsync('initramfs', opts.initrd) : undefined,
    ]);
    // Between the steps, the loop gets a turn and an abort is taken: what was built is closed.
    const step = async (): Promise<void> => {
      await turn();
      signal?.throwIfAborted();
    };
    await step();
    parseBzImage(kernel);
    const kvm = openKvm(opts);
    let machine: Machine | undefined;
    let pc: PcMachine | undefined;
    try {
      await step();
      const cpu = hostCpuOf(kvm);
      await step();
      machine = await createMachineAsync(opts, checked.ramSize);
      await step();
      pc = new PcMachine(opts, { kernel, initrd }, machine, kvm, cpu);
      for (const [i, spec] of (opts.devices ?? []).entries()) {
        await step();
        pc.#attach(await machine.addDeviceAsync(spec.bdf, deviceOptions(spec)), spec, i);
      }
      await step();
      await pc.#boots.firstAsync(step);
      return pc;
    } catch (e) {
      abandon(pc ?? machine, kvm);
      throw e;
    }
  }

  /** The current boot's VM (null once closed). */
  get vm(): Vm | null {
    return this.#boots.current?.vm ?? null;
  }

  /** The current boot's vCPUs. */
  get vcpus(): readonly Vcpu[] {
    return this.#boots.current?.vcpus ?? [];
  }

  /** Where the current boot put the kernel, initramfs and command line. */
  get layout(): LinuxBootLayout | null {
    return this.#boots.current?.layout ?? null;
  }

  /** The BARs as the machine's firmware placed them at the last boot. */
  get bars(): readonly PlacedBar[] {
    return this.#boots.bars;
  }

  /** How many boots so far (1 after create). */
  get boots(): number {
    return this.#boots.count;
  }

  /**
   * Reports so far, by PcReport kind (read off {@link guestErrors}' counts, which have them by
   * source and kind).
   */
  get reportCounts(): Readonly<Record<PcReport['kind'], number>> {
    return this.#reports.counts;
  }

  /**
   * Where every part of the machine reports what the guest does wrong (the machine's
   * `guestErrors`): counts by kind, the `guest-error` event (also heard on the PcMachine itself).
   */
  get guestErrors(): GuestErrorSink {
    return this.machine.guestErrors;
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
    return resourcesOf(this.#boots.current?.vm, this.machine, this.devices);
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
      throw new ArgRangeError(`timeoutMs ${String(timeout)} must be positive`);
    const boot = this.#boots.current;
    if (boot === null) {
      throw new VmmError(
        'ENOBOOT',
        'nothing to run: the last reboot failed',
        'reboot again with inputs that load',
      );
    }
    if (this.#pending !== null) return this.#take();
    this.#running = true;
    // While the vCPUs run, the region changes of a guest's config write come a turn after it.
    for (const d of this.devices) d.deferMappings = this.#mappings.schedule;
    try {
      // The guest starts on the memory map and the interrupt wiring its boot queued.
      await boot.pending();
      const end = await boot.set.run({
        ...(Number.isFinite(timeout) ? { timeoutMs: timeout } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      // A run ends with the memory map and interrupt wiring the guest's last writes asked for,
      // and with the console's last bytes out of the vCPU threads' sink.
      await boot.pending();
      if (this.#closed) return { reason: 'stopped' };
      this.#uartThreads?.drain();
      if (this.#pending !== null) return this.#take();
      return pcExitOf(end);
    } finally {
      for (const d of this.devices) d.deferMappings = null;
      this.#running = false;
    }
  }

  /** Ask a run in progress to end (with `stopped`): the vCPUs are paused, not lost. */
  stop(): void {
    if (this.#pending === null) this.#pending = { reason: 'stopped' };
    this.#boots.current?.set.interrupt();
  }

  /**
   * Reset and boot again, as after a PC's reset: a new VM and vCPUs, every device reset
   * (`VfioPciDevice.reset('guest')`) and its BARs placed again, guest RAM cleared and the kernel
   * loaded again, with `opts.cmdline` if given. Not while running.
   */
  reboot(opts: { cmdline?: string } = {}): void {
    this.#beginReboot(opts);
    this.#boots.restart(opts.cmdline);
  }

  /**
   * {@link reboot} without holding the event loop: device resets run on the libuv thread pool, guest
   * RAM is cleared in pieces, with a turn for the loop between the steps.
   * The machine counts as running meanwhile: run() and another reboot are refused.
   *
   * `opts.signal` aborts it between two steps with the signal's reason; the machine then has no boot
   * until the next reboot.
   */
  async rebootAsync(opts: { cmdline?: string; signal?: AbortSignal } = {}): Promise<void> {
    const signal = checkSignal(opts.signal);
    signal?.throwIfAborted();
    this.#beginReboot(opts);
    this.#running = true;
    try {
      await this.#boots.restartAsync(opts.cmdline, async () => {
        await new Promise<void>((resolve) => setImmediate(resolve));
        this.#checkOpen('rebootAsync');
        signal?.throwIfAborted();
      });
    } finally {
      this.#running = false;
    }
  }

  #beginReboot(opts: { cmdline?: string }): void {
    this.#checkOpen('reboot');
    if (opts.cmdline !== undefined && typeof opts.cmdline !== 'string') {
      throw new ArgTypeError('reboot: cmdline must be a string');
    }
    if (this.#running)
      throw new VmmError('EBUSY', 'reboot while the machine is running', 'await run() first');
    this.#pending = null;
  }

  /**
   * Stop everything and release it: the VM (vCPUs, irqfds, slots), the DMA mappings, the devices,
   * the container, guest RAM and the KVM fd. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#mappings.drop();
    allSteps([
      () => this.#boots.close(),
      () => this.#uartThreads?.close(),
      () => this.machine.close(),
      () => this.kvm.close(),
    ]);
  }

  /**
   * {@link close} without holding the event loop: the vCPU threads are stopped and the VM closed
   * first, then the devices' fds are closed on the libuv thread pool (the kernel resets each
   * device then), with a turn for the loop between the steps. Idempotent.
   */
  async closeAsync(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#mappings.drop();
    await allStepsAsync([
      () => this.#boots.closeAsync(turn),
      () => this.#uartThreads?.close(),
      () => this.machine.closeAsync(),
      () => this.kvm.close(),
    ]);
  }

  /** Same as {@link PcMachine.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@link PcMachine.closeAsync}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.closeAsync();
  }

  /** The running boot's vCPU set (its counts are folded in once closed). */
  #liveSet(): VcpuSet | null {
    return this.#closed ? null : (this.#boots.current?.set ?? null);
  }

  // ---- runtime ----------------------------------------------------------------------------------

  #take(): PcExit {
    const p = this.#pending!;
    this.#pending = null;
    return p;
  }

  /** Region changes a guest's config write handed over failed (a memory listener threw). */
  #mappingsFailed(error: unknown): void {
    if (this.#pending === null) this.#pending = { reason: 'error', error };
    this.#boots.current?.set.interrupt();
  }

  #requestReset(by: 'i8042' | 'reset-control'): void {
    if (this.#pending === null) this.#pending = { reason: 'reset', by };
    this.#boots.current?.set.interrupt();
  }

  #irqLine(irq: number, level: boolean): void {
    const vm = this.#boots.current?.vm;
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
