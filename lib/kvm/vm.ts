// Vm is the VM fd's one owner: each VM ioctl is a method here (memory slots, the irqchip, GSI
// routing, irqfd and ioeventfd, the KVM-VFIO device, vCPUs), so that its close releases all of it in
// order; that is why this file is past 400 lines. The slot table (slots.ts), the queue of slot
// changes (slot-queue.ts) and the vCPUs (vcpu.ts) are files of their own.
import { ArgRangeError, ArgTypeError } from '../base/error';
import { native, type NativeHandle } from '../native';
import { PAGE_SIZE } from '../base';
import { allSteps, stepErrors, turn } from '../base/steps';
import { closedError, kvmError } from './errors';
import { addOp, removeOp, SlotQueue } from './slot-queue';
import { SlotTable, type MemorySlot, type QueuedSlot, type SlotSpec, type SlotTarget } from './slots';
import {
  encodeRouting,
  KVM_CAP,
  KVM_DEV_TYPE_VFIO,
  KVM_DEV_VFIO_FILE,
  KVM_DEV_VFIO_FILE_ADD,
  KVM_DEV_VFIO_FILE_DEL,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_IRQFD_FLAG_RESAMPLE,
  KVM_PIT_SPEAKER_DUMMY,
  type GsiRoute,
} from './uapi';
import { Vcpu, type VcpuOptions } from './vcpu';

/** Something with an fd number: an {@link EventFd}, a vfio Group or Device. */
export interface HasFd {
  /** An open file descriptor, e.g. an eventfd's. */
  readonly fd: number;
}

/** Options of {@link Vm.irqfd}. */
export interface IrqfdOptions {
  /** For level-triggered (INTx) routes: KVM signals this eventfd when the guest EOIs the line. */
  resample?: HasFd;
}

/** Options of {@link Vm.ioeventfd}. */
export interface IoeventfdOptions {
  /** A port instead of a memory address. */
  pio?: boolean;
  /** Only writes of this value signal the eventfd. */
  datamatch?: bigint;
}

/**
 * An assigned irqfd or ioeventfd; `release()` deassigns it (idempotent). The assignment holds its
 * own duplicate of the eventfd, so it can be released after the caller closed theirs.
 */
export interface Assignment {
  /** Which ioctl assigned it: KVM_IRQFD or KVM_IOEVENTFD. */
  readonly kind: 'irqfd' | 'ioeventfd';
  /** The eventfd number as the caller passed it (the assignment holds a duplicate of its own). */
  readonly fd: number;
  /** The GSI (irqfd) or the address/port (ioeventfd). */
  readonly target: number;
  /** Deassign it (idempotent). */
  release(): void;
}

function fdOf(x: HasFd, what: string): number {
  if (x === null || typeof x !== 'object' || !Number.isInteger(x.fd) || x.fd < 0) {
    throw new ArgTypeError(`${what} must be an open object with an fd`);
  }
  return x.fd;
}

/** What a VM takes from the /dev/kvm it was created on (the Kvm class, without importing it). */
export interface VmParent {
  readonly path: string;
  readonly vcpuMmapSize: number;
}

/** The kvm_irq_routing of `routes`, each checked. */
function checkedRouting(routes: readonly GsiRoute[]): Buffer {
  if (!Array.isArray(routes)) throw new ArgTypeError('routes must be an array');
  for (const r of routes) {
    if (!Number.isInteger(r.gsi) || r.gsi < 0 || r.gsi > 0xffffffff)
      throw new ArgRangeError(`bad GSI ${String(r.gsi)}`);
    if (r.kind !== 'msi' && r.kind !== 'irqchip')
      throw new ArgTypeError(`route kind must be 'msi' or 'irqchip'`);
  }
  return encodeRouting(routes);
}

/**
 * A KVM virtual machine: memory slots with accounting, the in-kernel irqchip, GSI routing, irqfd,
 * ioeventfd, MSI injection, the KVM-VFIO device and vCPUs.
 *
 * Closing the VM closes the vCPUs, removes its VFIO files from the KVM-VFIO device and closes it,
 * then the VM fd, with which KVM releases its slots, irqfds and ioeventfds; {@link Vm.slots},
 * {@link Vm.assignments} and `vcpus` are then empty, which is what a VMM can check to know nothing
 * is left behind.
 */
export class Vm implements SlotTarget, Disposable {
  /** How errors name it: the KVM node's path and ` vm`, e.g. `/dev/kvm vm`. */
  readonly path: string;
  /** Memory slot accounting (capacity from KVM_CAP_NR_MEMSLOTS). */
  readonly slots: SlotTable;
  readonly #queue: SlotQueue;
  readonly #handle: NativeHandle;
  readonly #vcpuMmapSize: number;
  readonly #vcpus = new Set<Vcpu>();
  /** Each assignment, with the duplicate of its eventfd it deassigns with. */
  readonly #assigned = new Map<Assignment, NativeHandle>();
  #vfioDevice: NativeHandle | null = null;
  #vfioFiles = new Set<number>();
  #irqchip = false;
  #closed = false;

  private constructor(handle: NativeHandle, kvm: VmParent) {
    this.#handle = handle;
    this.path = `${kvm.path} vm`;
    this.#vcpuMmapSize = kvm.vcpuMmapSize;
    const max = native.kvmCheckExtension(handle, KVM_CAP.NR_MEMSLOTS) || 32;
    this.slots = new SlotTable(max, PAGE_SIZE);
    this.#queue = new SlotQueue(
      (ops) => (this.#closed ? null : native.kvmSetUserMemoryRegionsAsync(this.#handle, ops)),
      this.slots,
    );
  }

  /** @internal */
  static _create(handle: NativeHandle, kvm: VmParent): Vm {
    try {
      return new Vm(handle, kvm);
    } catch (e) {
      native.closeFd(handle);
      throw e;
    }
  }

  /** Whether {@link Vm.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** True once {@link Vm.createIrqchip} has run. */
  get hasIrqchip(): boolean {
    return this.#irqchip;
  }

  /** The vCPUs not yet closed. */
  get vcpus(): readonly Vcpu[] {
    return [...this.#vcpus];
  }

  /** The irqfds and ioeventfds currently assigned. */
  get assignments(): readonly Assignment[] {
    return [...this.#assigned.keys()];
  }

  /** KVM_CHECK_EXTENSION on the VM fd (what this VM supports). */
  checkExtension(cap: keyof typeof KVM_CAP): number {
    return native.kvmCheckExtension(this.#open('KVM_CHECK_EXTENSION'), KVM_CAP[cap]);
  }

  /**
   * KVM_SET_USER_MEMORY_REGION: give the guest `spec.size` bytes of host memory at
   * `spec.guestAddress`. The slot pins the memory's pages until it is removed or the VM closes.
   * @throws RangeError (alignment, overlap, bounds), VfioError ENOSLOT (all slots used) or the kernel's
   */
  addSlot(spec: SlotSpec): MemorySlot {
    const h = this.#open('KVM_SET_USER_MEMORY_REGION');
    this.#notQueued();
    const slot = this.slots.reserve(spec);
    try {
      native.kvmSetUserMemoryRegion(h, ...addOp(slot));
    } catch (e) {
      this.slots.release(slot);
      throw e;
    }
    return slot;
  }

  /** Delete a slot (size 0). Idempotent for a slot already removed. */
  removeSlot(slot: MemorySlot): void {
    if (!this.slots.has(slot)) return;
    const h = this.#open('KVM_SET_USER_MEMORY_REGION');
    this.#notQueued();
    native.kvmSetUserMemoryRegion(h, ...removeOp(slot));
    this.slots.release(slot);
  }

  /**
   * {@link Vm.addSlot} queued: the slot is checked and reserved now (bad specs throw here, as
   * addSlot's do) and given to KVM on the libuv thread pool after every slot change queued before
   * it; `done` resolves once KVM has it, or rejects with KVM's refusal (the slot is then released).
   * Changes queued in one synchronous stretch reach KVM in one batch, in order. While any are
   * queued, addSlot and removeSlot refuse (EBUSY): await {@link Vm.slotChanges} first.
   */
  queueSlotAdd(spec: SlotSpec): QueuedSlot {
    this.#open('KVM_SET_USER_MEMORY_REGION');
    return this.#queue.add(spec);
  }

  /**
   * {@link Vm.removeSlot} queued: the slot leaves {@link Vm.slots} now (its number may be reused
   * by the next add, which KVM gets after this removal) and KVM once the promise resolves.
   */
  queueSlotRemoval(slot: MemorySlot): Promise<void> {
    if (!this.slots.has(slot)) return Promise.resolve();
    this.#open('KVM_SET_USER_MEMORY_REGION');
    return this.#queue.remove(slot);
  }

  /**
   * Resolves once every queued slot change has reached KVM (whether KVM took it or not); null when
   * none is waiting. A vCPU whose access queued changes waits for this before it runs on.
   */
  get slotChanges(): Promise<void> | null {
    return this.#queue.pending;
  }

  #notQueued(): void {
    if (this.#queue.pending !== null) {
      throw kvmError(
        'KVM_SET_USER_MEMORY_REGION',
        'EBUSY',
        'slot changes are queued for KVM: a change made now would reach it out of order',
        'await vm.slotChanges first, or queue this change too',
        this.path,
      );
    }
  }

  /** KVM_CREATE_IRQCHIP: in-kernel PIC, IOAPIC and local APICs. Before any vCPU. */
  createIrqchip(): void {
    const h = this.#open('KVM_CREATE_IRQCHIP');
    if (this.#vcpus.size > 0) {
      throw new ArgRangeError('createIrqchip: the irqchip must be created before the first vCPU');
    }
    native.kvmCreateIrqchip(h);
    this.#irqchip = true;
  }

  /**
   * KVM_CREATE_PIT2: the in-kernel i8254 timer at ports 0x40-0x43 on IRQ 0, with port 0x61's
   * speaker bits answered in the kernel too (KVM_PIT_SPEAKER_DUMMY). After the irqchip.
   */
  createPit(): void {
    const h = this.#open('KVM_CREATE_PIT2');
    this.#needIrqchip('KVM_CREATE_PIT2', 'the in-kernel PIT needs the in-kernel irqchip');
    native.kvmCreatePit2(h, KVM_PIT_SPEAKER_DUMMY);
  }

  /** KVM_SET_TSS_ADDR: the three pages VMX needs below 4 GiB for real mode (ignored by SVM). */
  setTssAddr(address: number): void {
    if (!Number.isInteger(address) || address < 0 || address > 0xffffd000 || address % 4096 !== 0)
      throw new ArgRangeError(`setTssAddr: 0x${Number(address).toString(16)} is not a page below 4 GiB`);
    native.kvmSetTssAddr(this.#open('KVM_SET_TSS_ADDR'), address);
  }

  /**
   * KVM_IRQ_LINE_STATUS: drive input `irq` of the in-kernel irqchip (GSI numbering: 0-15 the ISA
   * IRQs on the PICs and the IOAPIC, 16-23 the IOAPIC). Returns KVM's status: > 0 delivered, 0
   * coalesced with one still pending, < 0 masked by the guest.
   */
  irqLine(irq: number, level: boolean): number {
    const h = this.#open('KVM_IRQ_LINE_STATUS');
    if (!Number.isInteger(irq) || irq < 0 || irq > 0xffffffff)
      throw new ArgRangeError(`irqLine: bad IRQ ${String(irq)}`);
    this.#needIrqchip('KVM_IRQ_LINE_STATUS', 'KVM_IRQ_LINE needs the in-kernel irqchip');
    return native.kvmIrqLine(h, irq, level ? 1 : 0);
  }

  /**
   * KVM_SET_GSI_ROUTING: replace the whole routing table. The in-kernel irqchip installs a default
   * table for GSIs 0-23; a VMM that replaces it passes those routes too.
   */
  setGsiRouting(routes: readonly GsiRoute[]): void {
    const h = this.#open('KVM_SET_GSI_ROUTING');
    native.kvmSetGsiRouting(h, checkedRouting(routes));
  }

  /**
   * {@link setGsiRouting} on the libuv thread pool (KVM waits for an SRCU grace period before the
   * table is in force: milliseconds under nested virtualization). Checked at once; tables sent this
   * way reach KVM in the order they were sent. Rejects with the error setGsiRouting would throw.
   */
  setGsiRoutingAsync(routes: readonly GsiRoute[]): Promise<void> {
    const h = this.#open('KVM_SET_GSI_ROUTING');
    return native.kvmSetGsiRoutingAsync(h, checkedRouting(routes));
  }

  /**
   * KVM_IRQFD: each signal of `eventfd` raises `gsi` in the guest, in the kernel. With
   * `resample`, the route is level-triggered: KVM lowers the line and signals `resample` on EOI.
   */
  irqfd(eventfd: HasFd, gsi: number, opts: IrqfdOptions = {}): Assignment {
    const h = this.#open('KVM_IRQFD');
    const fd = fdOf(eventfd, 'eventfd');
    if (!Number.isInteger(gsi) || gsi < 0 || gsi > 0xffffffff)
      throw new ArgRangeError(`irqfd: bad GSI ${String(gsi)}`);
    const resample = opts.resample !== undefined ? fdOf(opts.resample, 'resample eventfd') : 0;
    this.#needIrqchip('KVM_IRQFD', 'KVM_IRQFD needs the in-kernel irqchip');
    const own = native.dupFd(fd);
    try {
      native.kvmIrqfd(h, fd, gsi, opts.resample !== undefined ? KVM_IRQFD_FLAG_RESAMPLE : 0, resample);
    } catch (e) {
      native.closeFd(own);
      throw e;
    }
    const a: Assignment = {
      kind: 'irqfd',
      fd,
      target: gsi,
      release: () => {
        if (!this.#assigned.delete(a)) return;
        try {
          native.kvmIrqfd(this.#handle, native.fdOf(own), gsi, KVM_IRQFD_FLAG_DEASSIGN, 0);
        } finally {
          native.closeFd(own);
        }
      },
    };
    this.#assigned.set(a, own);
    return a;
  }

  /**
   * KVM_IOEVENTFD: guest writes of `length` bytes to `address` (memory, or a port with `pio`)
   * signal `eventfd` in the kernel and never exit to userspace.
   */
  ioeventfd(
    eventfd: HasFd,
    address: number,
    length: 0 | 1 | 2 | 4 | 8,
    opts: IoeventfdOptions = {},
  ): Assignment {
    const h = this.#open('KVM_IOEVENTFD');
    const fd = fdOf(eventfd, 'eventfd');
    if (![0, 1, 2, 4, 8].includes(length))
      throw new ArgRangeError(`ioeventfd: length ${String(length)} is not 0, 1, 2, 4 or 8`);
    if (!Number.isSafeInteger(address) || address < 0)
      throw new ArgRangeError(`ioeventfd: bad address ${String(address)}`);
    let flags = opts.pio ? KVM_IOEVENTFD_FLAG_PIO : 0;
    if (opts.datamatch !== undefined) {
      if (typeof opts.datamatch !== 'bigint') throw new ArgTypeError('datamatch must be a bigint');
      flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    }
    const match = opts.datamatch ?? 0n;
    const own = native.dupFd(fd);
    try {
      native.kvmIoeventfd(h, address, length, fd, flags, match);
    } catch (e) {
      native.closeFd(own);
      throw e;
    }
    const a: Assignment = {
      kind: 'ioeventfd',
      fd,
      target: address,
      release: () => {
        if (!this.#assigned.delete(a)) return;
        try {
          native.kvmIoeventfd(
            this.#handle,
            address,
            length,
            native.fdOf(own),
            flags | KVM_IOEVENTFD_FLAG_DEASSIGN,
            match,
          );
        } finally {
          native.closeFd(own);
        }
      },
    };
    this.#assigned.set(a, own);
    return a;
  }

  /**
   * KVM_SIGNAL_MSI: inject one MSI. Returns false when it was not delivered (blocked by the guest,
   * or no vCPU's APIC matches its destination).
   * Needs the in-kernel irqchip (KVM answers EINVAL without it).
   */
  signalMsi(addressLo: number, addressHi: number, data: number): boolean {
    const h = this.#open('KVM_SIGNAL_MSI');
    this.#needIrqchip('KVM_SIGNAL_MSI', 'KVM_SIGNAL_MSI needs the in-kernel irqchip');
    try {
      return native.kvmSignalMsi(h, addressLo >>> 0, addressHi >>> 0, data >>> 0) > 0;
    } catch (e) {
      // KVM answers -1 (EPERM) when no local APIC matches the destination: not delivered.
      if (e instanceof Error && (e as { code?: string }).code === 'EPERM') return false;
      throw e;
    }
  }

  /**
   * Add a VFIO group (or device cdev) fd to the VM's KVM-VFIO device, created on first use: KVM
   * then knows the VM has assigned devices (coherent DMA, and the kvm pointer vfio drivers get).
   */
  addVfioFile(file: HasFd): void {
    const h = this.#open('KVM_SET_DEVICE_ATTR');
    const fd = fdOf(file, 'VFIO file');
    if (this.#vfioDevice === null) this.#vfioDevice = native.kvmCreateDevice(h, KVM_DEV_TYPE_VFIO);
    native.kvmDeviceAttrFd(this.#vfioDevice, true, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, fd);
    this.#vfioFiles.add(fd);
  }

  /** Remove a file added with {@link Vm.addVfioFile}. */
  removeVfioFile(file: HasFd): void {
    this.#open('KVM_SET_DEVICE_ATTR');
    const fd = fdOf(file, 'VFIO file');
    if (this.#vfioDevice === null || !this.#vfioFiles.has(fd)) return;
    native.kvmDeviceAttrFd(this.#vfioDevice, true, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_DEL, fd);
    this.#vfioFiles.delete(fd);
  }

  /** The fds in the KVM-VFIO device. */
  get vfioFiles(): readonly number[] {
    return [...this.#vfioFiles];
  }

  /** KVM_CREATE_VCPU. The vCPU belongs to this thread (its kick timer targets it). */
  createVcpu(id = this.#vcpus.size, opts: VcpuOptions = {}): Vcpu {
    const h = this.#open('KVM_CREATE_VCPU');
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff)
      throw new ArgRangeError(`bad vCPU id ${String(id)}`);
    const v = Vcpu._create(
      h,
      id,
      this.#vcpuMmapSize,
      `${this.path} vcpu ${id}`,
      () => this.#vcpus.delete(v),
      opts,
    );
    this.#vcpus.add(v);
    return v;
  }

  /** Release everything, then close the VM fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    const { now, vfio, device } = this.#closeSteps();
    // Every step runs even when an earlier one throws; the first error is thrown at the end.
    allSteps([
      ...now,
      ...vfio,
      ...(device !== null ? [() => native.closeFd(device)] : []),
      () => {
        this.#closed = true;
        native.closeFd(this.#handle);
      },
    ]);
  }

  /**
   * {@link Vm.close} with the VM fd closed on the libuv thread pool: closing its last reference
   * destroys the VM in the kernel (its MMU, its slots' page references, the irqchip), which held the
   * event loop tens of ms under the lab's TCG. Each KVM-VFIO file is deleted in a turn of the loop
   * of its own, and the KVM-VFIO device is closed on the thread pool too (its release waits for an
   * RCU grace period). The VM counts as closed at once, its vCPUs and slots gone.
   */
  async closeAsync(): Promise<void> {
    if (this.#closed) return;
    const { now, vfio, device } = this.#closeSteps();
    const errors = stepErrors(now);
    this.#closed = true;
    for (const step of vfio) {
      await turn();
      errors.push(...stepErrors([step]));
    }
    if (device !== null) await native.closeFdAsync(device).catch((e: unknown) => errors.push(e));
    // Slot changes on their way to KVM hold a duplicate of the VM fd: the VM ends after them.
    await native.closeFdAsync(this.#handle).catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw errors[0];
  }

  /**
   * What goes before the VM fd itself: `now` its vCPUs, assignments and slot records, then `vfio`
   * the KVM-VFIO files, each a KVM_DEV_VFIO_FILE_DEL (a few ms under TCG), then the KVM-VFIO
   * `device` to close (no longer the VM's once these ran).
   */
  #closeSteps(): { now: (() => void)[]; vfio: (() => void)[]; device: NativeHandle | null } {
    const vfio = this.#vfioDevice;
    const now = [
      ...[...this.#vcpus].map((v) => () => v.close()),
      // No KVM_IRQFD or KVM_IOEVENTFD deassign each: closing the VM fd releases its irqfds and its
      // I/O buses their ioeventfds, where each deassign would wait for KVM's readers. Only the
      // duplicates go. (The KVM-VFIO files below are deleted one by one: a device's KVM is
      // cleared by that, and a later boot's VM may take it before this VM's release runs.)
      () => {
        const own = [...this.#assigned.values()];
        this.#assigned.clear();
        allSteps(own.map((h) => () => native.closeFd(h)));
      },
      // No KVM_SET_USER_MEMORY_REGION per slot: the VM's slots go with it, and each removal would
      // make KVM zap and wait for its readers. Only the record of them goes.
      () => this.slots.list().forEach((s) => this.slots.release(s)),
    ];
    if (vfio === null) return { now, vfio: [], device: null };
    return {
      now,
      vfio: [
        ...[...this.#vfioFiles].map(
          (fd) => () => native.kvmDeviceAttrFd(vfio, true, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_DEL, fd),
        ),
        () => {
          this.#vfioFiles.clear();
          this.#vfioDevice = null;
        },
      ],
      device: vfio,
    };
  }

  /** Same as {@link Vm.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Throws ENOIRQCHIP for an ioctl that needs the in-kernel irqchip before it exists. */
  #needIrqchip(op: string, message: string): void {
    if (!this.#irqchip) throw kvmError(op, 'ENOIRQCHIP', message, 'call vm.createIrqchip() first', this.path);
  }

  #open(op: string): NativeHandle {
    if (this.#closed) throw closedError(op, 'VM', this.path);
    return this.#handle;
  }
}
