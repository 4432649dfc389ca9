/**
 * The one file that loads the native addon. Everything else imports the typed binding from here.
 *
 * The addon is found by node-gyp-build: `build/Release` during development, or
 * `prebuilds/linux-x64/` in a published package (set `PREBUILDS_ONLY=1` to ignore `build/`).
 * The path is relative to this file's directory, so it works from `lib/` (tests) and `dist/`.
 *
 * It loads when this file is first imported (by the parts that make native calls), as a Node
 * addon loads at require: a program pays for it at start-up, not inside its first call (under the
 * lab's TCG, finding and loading it held the event loop 60-160 ms in PcMachine.open). Where it
 * cannot load, importing still succeeds: the error is kept and thrown by the first native use, so
 * the pure-TypeScript layers (lib/memory never imports this file) work there.
 */
import * as path from 'node:path';

import { VfioBridgeError } from './base/error';

/** An owned file descriptor inside the addon (container, group or device). Opaque to JavaScript. */
export interface NativeHandle {
  readonly __vfioBridgeHandle: never;
}

/** A mapping inside the addon. Opaque to JavaScript. */
export interface NativeMappingHandle {
  readonly __vfioBridgeMapping: never;
}

/** A vCPU inside the addon (fd, kvm_run page, kick timer). Opaque to JavaScript. */
export interface NativeKvmVcpu {
  readonly __vfioBridgeVcpu: never;
}

/** An exit table inside the addon: the ranges vCPU threads serve without JavaScript. */
export interface NativeExitTable {
  readonly __vfioBridgeExitTable: never;
}

/** One range of an exit table (native/exit_table.h). */
export interface NativeExitEntry {
  start: number;
  size: number;
  /** 0 a mapping, 1 a device fd, 2 a constant (reads only), 3 a byte sink (byte writes only). */
  kind: 0 | 1 | 2 | 3;
  /** The mapping (kind 0), the device fd (kind 1), the sink (kind 3); null for a constant. */
  handle: NativeMappingHandle | NativeHandle | NativeByteSink | null;
  /** Offset in the mapping (kind 0) or in the fd (kind 1) of `start`. */
  offset: number;
  /** What the range reads as (kind 2). */
  value?: number;
  readonly: boolean;
}

/** A byte sink's handle (native/byte_sink.cc): where vCPU threads put a port's written bytes. */
export interface NativeByteSink {
  readonly __vfioBridgeByteSink: never;
}

/** A vCPU thread's counters. */
export interface NativeVcpuThreadStats {
  /** MMIO and port exits served on the thread, without JavaScript. */
  mmio: number;
  pio: number;
  /** Exits handed to JavaScript. */
  handoffs: number;
  /** Accesses served on the thread that failed (SIGBUS, pread/pwrite errors). */
  faults: number;
  /** KVM_RUN calls. */
  runs: number;
}

/** Guest memory (a mapped memfd) inside the addon. Opaque to JavaScript. */
export interface NativeGuestMemoryHandle {
  readonly __vfioBridgeGuestMemory: never;
}

/** What `guestMemoryInfo` reports about open guest memory. */
export interface NativeGuestMemoryInfo {
  /** The host virtual address of the first byte (for the IOMMU and KVM memory slots). */
  readonly address: bigint;
  readonly fd: number;
  readonly length: number;
  readonly dev: number;
  readonly ino: number;
}

/** A new mapping: its handle, and its slot in the environment's scratch (see `mappingScratch`). */
export interface NativeMapping {
  readonly handle: NativeMappingHandle;
  readonly slot: number;
}

/**
 * Builds every error the addon throws (registered by lib/vfio), so errors belong to the caller's
 * realm. `kind` 'RangeError' and 'TypeError' use only `message`.
 */
export type NativeErrorFactory = (
  kind: 'VfioError' | 'RangeError' | 'TypeError',
  op: string,
  code: string | undefined,
  errno: number | undefined,
  message: string,
  path: string | undefined,
  bdf: string | undefined,
) => Error;

/** The arguments of VFIO_DEVICE_SET_IRQS: device, index, flags, start, count, raw payload. */
type IrqSetArgs = [
  device: NativeHandle,
  index: number,
  flags: number,
  start: number,
  count: number,
  data: Uint8Array | undefined,
];

/** The native interface. Raw ioctl results come back as Buffers and are parsed in lib/vfio/uapi. */
export interface NativeBinding {
  /** The cheapest possible N-API call: the benchmark baseline. */
  noop(): void;
  setErrorFactory(factory: NativeErrorFactory): void;
  /** Makes the SIGBUS guard the process's handler again, chaining to whatever replaced it. */
  assertFaultGuard(): void;

  openFd(path: string): NativeHandle;
  closeFd(handle: NativeHandle): void;
  /** close(2) on the libuv thread pool; the handle is closed at once. */
  closeFdAsync(handle: NativeHandle): Promise<void>;
  fdOf(handle: NativeHandle): number;

  mmap(
    fd: number,
    offset: number,
    length: number,
    writable: boolean,
    path: string | undefined,
    bdf: string | undefined,
  ): NativeMapping;
  memfd(name: string, size: number): number;
  /** The host's page size (sysconf(_SC_PAGESIZE)): the granularity of every mmap. */
  readonly pageSize: number;
  /**
   * The environment's 24-byte scratch for the single accessors, which take no arguments:
   * uint32 slot at byte 0, uint64 offset at byte 8, uint64 value at byte 16 (in for stores, out
   * for loads). Passing operands as N-API arguments would cost more than the access itself.
   */
  readonly mappingScratch: ArrayBuffer;
  /**
   * Makes `buffer` (24 bytes or more, laid out as `mappingScratch`) the environment's scratch from
   * now on, so JavaScript can make its views over it before the addon is loaded.
   */
  useMappingScratch(buffer: ArrayBuffer): void;
  mapRead8(): void;
  mapRead16(): void;
  mapRead32(): void;
  mapRead64(): void;
  mapWrite8(): void;
  mapWrite16(): void;
  mapWrite32(): void;
  mapWrite64(): void;
  mapReadBlock(
    mapping: NativeMappingHandle,
    offset: number,
    count: number,
    width: number,
    into: ArrayBufferView,
  ): void;
  mapWriteBlock(mapping: NativeMappingHandle, offset: number, data: ArrayBufferView, width: number): void;
  unmap(mapping: NativeMappingHandle): void;

  vfioGetApiVersion(container: NativeHandle): number;
  vfioCheckExtension(container: NativeHandle, extension: number): number;
  vfioSetIommu(container: NativeHandle, type: number): void;
  vfioIommuInfo(container: NativeHandle): Buffer;
  memlockLimit(): [bigint, bigint];
  /** The calling thread's CPU time in ms (CLOCK_THREAD_CPUTIME_ID). */
  threadCpuMs(): number;

  /** Map [offset, offset + size) of a mapping or guest memory at iova (VFIO_IOMMU_MAP_DMA). */
  vfioMapDma(
    container: NativeHandle,
    memory: NativeMappingHandle | NativeGuestMemoryHandle,
    offset: number,
    iova: number,
    size: number,
    read: boolean,
    write: boolean,
  ): void;
  /** vfioMapDma on the libuv thread pool: resolves once mapped, rejects with the same VfioError. */
  vfioMapDmaAsync(
    container: NativeHandle,
    memory: NativeMappingHandle | NativeGuestMemoryHandle,
    offset: number,
    iova: number,
    size: number,
    read: boolean,
    write: boolean,
  ): Promise<void>;
  /** VFIO_IOMMU_UNMAP_DMA; returns the bytes the kernel unmapped. */
  vfioUnmapDma(container: NativeHandle, iova: number, size: number): number;

  /** memfd_create(MFD_CLOEXEC | flags) + ftruncate + mmap; flags may hold MFD_HUGETLB and a size. */
  guestMemoryCreate(name: string, size: number, flags: number): NativeGuestMemoryHandle;
  /** Map guest memory shared by another thread: dup(fd), check it is still (dev, ino), mmap. */
  guestMemoryAttach(fd: number, size: number, dev: number, ino: number): NativeGuestMemoryHandle;
  /** An external ArrayBuffer over [offset, offset + length) of the memory (at most 4 GiB on Node 20). */
  guestMemoryBuffer(memory: NativeGuestMemoryHandle, offset: number, length: number): ArrayBuffer;
  /** memset [offset, offset + length) of the memory to `byte` (0..255), in place. */
  guestMemoryFill(memory: NativeGuestMemoryHandle, offset: number, length: number, byte: number): void;
  guestMemoryInfo(memory: NativeGuestMemoryHandle): NativeGuestMemoryInfo;
  /** Detach every buffer made over the memory (all listed), unmap, close the fd. Idempotent. */
  guestMemoryClose(memory: NativeGuestMemoryHandle, buffers: ArrayBuffer[]): void;

  vfioGroupStatus(group: NativeHandle): number;
  vfioGroupSetContainer(group: NativeHandle, container: NativeHandle): void;
  vfioGroupUnsetContainer(group: NativeHandle): void;
  vfioGroupGetDeviceFd(group: NativeHandle, device: string): NativeHandle;
  /** VFIO_GROUP_GET_DEVICE_FD on the thread pool, on a dup of the group fd. */
  vfioGroupGetDeviceFdAsync(group: NativeHandle, device: string): Promise<NativeHandle>;

  vfioDeviceInfo(device: NativeHandle): Buffer;
  vfioRegionInfo(device: NativeHandle, index: number): Buffer;
  vfioIrqInfo(device: NativeHandle, index: number): Buffer;
  vfioDeviceReset(device: NativeHandle): void;
  /** VFIO_DEVICE_RESET on the thread pool, on a dup of the device fd. */
  vfioDeviceResetAsync(device: NativeHandle): Promise<void>;
  pread(device: NativeHandle, offset: number, size: number): number | bigint;
  pwrite(device: NativeHandle, offset: number, size: number, value: number | bigint): void;
  preadBlock(device: NativeHandle, offset: number, length: number): Buffer;
  pwriteBlock(device: NativeHandle, offset: number, data: Uint8Array): void;

  /** Host address of a mapping's first byte (for KVM slots and DMA maps). */
  mapAddress(mapping: NativeMappingHandle): bigint;

  // KVM (native/kvm.cc, native/kvm_vcpu.cc): one function per ioctl; structs laid out in lib/kvm.
  kvmGetApiVersion(kvm: NativeHandle): number;
  kvmCheckExtension(kvmOrVm: NativeHandle, cap: number): number;
  kvmGetVcpuMmapSize(kvm: NativeHandle): number;
  kvmCreateVm(kvm: NativeHandle): NativeHandle;
  kvmCreateVmAsync(kvm: NativeHandle): Promise<NativeHandle>;
  kvmSetTssAddr(vm: NativeHandle, addr: number): void;
  /** Size 0 deletes the slot (memory null); a slot pins its memory until then. */
  kvmSetUserMemoryRegion(
    vm: NativeHandle,
    slot: number,
    flags: number,
    gpa: number,
    size: number,
    memory: NativeMappingHandle | NativeGuestMemoryHandle | null,
    offset: number,
  ): void;
  /**
   * The same ops (`[slot, flags, gpa, size, memory, offset]`), given to KVM in order on the thread
   * pool; one result per op: undefined, or the error KVM refused it with.
   */
  kvmSetUserMemoryRegionsAsync(
    vm: NativeHandle,
    ops: readonly (readonly [
      number,
      number,
      number,
      number,
      NativeMappingHandle | NativeGuestMemoryHandle | null,
      number,
    ])[],
  ): Promise<(Error | undefined)[]>;
  kvmCreateIrqchip(vm: NativeHandle): number;
  /** KVM_CREATE_PIT2 with kvm_pit_config.flags. */
  kvmCreatePit2(vm: NativeHandle, flags: number): void;
  /** KVM_IRQ_LINE_STATUS: returns the status (> 0 delivered, 0 coalesced, < 0 masked). */
  kvmIrqLine(vm: NativeHandle, irq: number, level: number): number;
  /** KVM_GET_SUPPORTED_CPUID: a struct kvm_cpuid2 (decoded in lib/kvm/x86.ts). */
  kvmGetSupportedCpuid(kvm: NativeHandle): Buffer;
  kvmSetGsiRouting(vm: NativeHandle, table: Buffer): void;
  /** kvmSetGsiRouting on the thread pool, in order with the VM's earlier in-order calls. */
  kvmSetGsiRoutingAsync(vm: NativeHandle, table: Buffer): Promise<void>;
  kvmIrqfd(vm: NativeHandle, fd: number, gsi: number, flags: number, resamplefd: number): void;
  kvmIoeventfd(
    vm: NativeHandle,
    addr: number,
    len: number,
    fd: number,
    flags: number,
    datamatch: bigint,
  ): void;
  kvmSignalMsi(vm: NativeHandle, addressLo: number, addressHi: number, data: number): number;
  kvmCreateDevice(vm: NativeHandle, type: number): NativeHandle;
  kvmDeviceAttrFd(device: NativeHandle, set: boolean, group: number, attr: number, fd: number): void;
  /**
   * KVM_CREATE_VCPU; the addon writes each exit into `exitBuffer` (48 bytes, layout in
   * native/kvm_vcpu.cc), which the caller keeps alive as long as the handle.
   */
  kvmCreateVcpu(vm: NativeHandle, id: number, mmapSize: number, exitBuffer: ArrayBuffer): NativeKvmVcpu;
  kvmCloseVcpu(vcpu: NativeKvmVcpu): void;
  kvmGetRegs(vcpu: NativeKvmVcpu): Buffer;
  kvmSetRegs(vcpu: NativeKvmVcpu, regs: Buffer): void;
  kvmGetSregs(vcpu: NativeKvmVcpu): Buffer;
  kvmSetSregs(vcpu: NativeKvmVcpu, sregs: Buffer): void;
  kvmGetLapic(vcpu: NativeKvmVcpu): Buffer;
  kvmSetLapic(vcpu: NativeKvmVcpu, lapic: Buffer): void;
  kvmSetFpu(vcpu: NativeKvmVcpu, fpu: Buffer): void;
  kvmGetTscKhz(vcpu: NativeKvmVcpu): number;
  kvmSetTscKhz(vcpu: NativeKvmVcpu, khz: number): void;
  /** KVM_SET_CPUID2 with a struct kvm_cpuid2 built in lib/kvm/x86.ts. */
  kvmSetCpuid2(vcpu: NativeKvmVcpu, table: Buffer): number;
  /** KVM_SET_MSRS with a struct kvm_msrs; returns how many MSRs KVM set. */
  kvmSetMsrs(vcpu: NativeKvmVcpu, table: Buffer): number;
  /**
   * One KVM_RUN bounded by `budgetNs`, or with 0 by the timer `kvmArmKick` armed (or unbounded);
   * returns kvm_run.exit_reason. Byte 29 of the exit buffer is 1 once the armed timer has expired.
   */
  kvmRun(vcpu: NativeKvmVcpu, budgetNs: number): number;
  /** KVM_RUN answering MMIO reads with `value` natively until another exit; returns reads served. */
  kvmRunNative(vcpu: NativeKvmVcpu, value: number, budgetNs: number): number;
  /** Arm the vCPU's kick timer `ns` from now for the runs that follow (0 disarms). */
  kvmArmKick(vcpu: NativeKvmVcpu, ns: number): void;
  /** Where each field of the exit record lies (native/kvm_vcpu.h). */
  readonly kvmExitLayout: {
    reason: number;
    size: number;
    address: number;
    data: number;
    count: number;
    isWrite: number;
    kicked: number;
    detail: number;
    bytes: number;
  };
  /**
   * Start the vCPU's own thread running KVM_RUN in a loop (native/vcpu_thread.cc), serving the
   * ranges of `table` itself; everything else reaches `onEvent` on this thread.
   */
  kvmVcpuStart(
    vcpu: NativeKvmVcpu,
    table: NativeExitTable | null,
    name: string,
    onEvent: (kind: number, a: number, b: number, c: number, d: number) => void,
    nice?: number,
  ): void;
  kvmVcpuPause(vcpu: NativeKvmVcpu): void;
  kvmVcpuResume(vcpu: NativeKvmVcpu): void;
  /** Stop and join the vCPU's thread (none: nothing to do). */
  kvmVcpuStop(vcpu: NativeKvmVcpu): void;
  kvmVcpuRef(vcpu: NativeKvmVcpu, ref: boolean): void;
  kvmVcpuStats(vcpu: NativeKvmVcpu): NativeVcpuThreadStats;
  /** During a hand-off: the vCPU keeps waiting after the handler returns, until kvmVcpuAnswer. */
  kvmVcpuDefer(vcpu: NativeKvmVcpu): void;
  /** Give a deferred hand-off's answer (already in the exit record); no thread: nothing. */
  kvmVcpuAnswer(vcpu: NativeKvmVcpu): void;
  exitTableCreate(): NativeExitTable;
  /** Replace a space's ranges (0 MMIO, 1 port I/O); returns once no vCPU uses the old ones. */
  exitTableSet(table: NativeExitTable, space: number, entries: readonly NativeExitEntry[]): void;
  /** What a vCPU thread would do with an access: null (JavaScript serves it) or where it goes. */
  exitTableLookup(
    table: NativeExitTable,
    space: number,
    address: number,
    size: number,
    isWrite: boolean,
  ): { kind: 0 | 1 | 2 | 3; at: bigint } | null;
  /** Serve one access as a vCPU thread would, on this thread: null when JavaScript must. */
  exitTableServe(
    table: NativeExitTable,
    space: number,
    address: number,
    size: number,
    isWrite: boolean,
    value: bigint,
  ): { value: bigint; fault: boolean; errno: number } | null;
  exitTableClose(table: NativeExitTable): void;
  /** A byte sink; `onBytes` runs on this loop when a byte arrives in it after it was emptied. */
  byteSinkOpen(onBytes: () => void): NativeByteSink;
  /** The bytes put in the sink since the last take (null: none). */
  byteSinkTake(sink: NativeByteSink): Buffer | null;
  byteSinkClose(sink: NativeByteSink): void;
  readonly kvmStructSizes: {
    regs: number;
    sregs: number;
    routingEntry: number;
    lapic: number;
    fpu: number;
    cpuidEntry: number;
    msrEntry: number;
  };
  /** fcntl(F_DUPFD_CLOEXEC) as an owned handle. */
  dupFd(fd: number): NativeHandle;

  /** A new non-blocking, close-on-exec eventfd. */
  eventfdOpen(): NativeHandle;
  /** One write(2) of `value` to the eventfd `fd`. */
  eventfdWrite(fd: number, value: number): void;
  /** Drains the eventfd `fd`: its counter, or 0 when nothing is pending (never blocks). */
  eventfdRead(fd: number): number;
  /** VFIO_DEVICE_SET_IRQS; `data` is the raw payload (int32 fds or one byte per vector). */
  vfioSetIrqs(...set: IrqSetArgs): void;
  /**
   * vfioSetIrqs on the thread pool, on duplicates of the device fd and of the payload's eventfds
   * (which the caller may close at once). In order: it starts only once the device's earlier
   * in-order calls have settled.
   */
  vfioSetIrqsAsync(...set: IrqSetArgs): Promise<void>;
  /**
   * A watcher on this environment's libuv loop: `callback(vector, count)` once per wake-up of a
   * watched eventfd, with the drained count (or `-errno` when the fd failed).
   */
  irqWatcherOpen(callback: (vector: number, count: number) => void): NativeIrqWatcher;
  irqWatcherAdd(watcher: NativeIrqWatcher, vector: number, fd: number): void;
  irqWatcherRemove(watcher: NativeIrqWatcher, vector: number): void;
  irqWatcherRef(watcher: NativeIrqWatcher, on: boolean): void;
  irqWatcherClose(watcher: NativeIrqWatcher): void;
  /** The benchmark's baseline: a bare uv_poll calling `callback()`; returns its stop function. */
  irqBaselineOpen(fd: number, callback: () => void): () => void;

  // iommufd (native/iommufd.cc, ioas_dma.cc) and the VFIO device cdev (native/device_cdev.cc).
  /** IOMMU_IOAS_ALLOC on an iommufd (/dev/iommu): the new IOAS's ID. */
  iommufdIoasAlloc(iommufd: NativeHandle): number;
  /** IOMMU_DESTROY of an IOAS or HWPT by ID. */
  iommufdDestroy(iommufd: NativeHandle, id: number): void;
  /**
   * IOMMU_IOAS_IOVA_RANGES, both calls of its size protocol: [out_iova_alignment, start0, last0,
   * start1, last1, ...] (inclusive ends).
   */
  iommufdIoasIovaRanges(iommufd: NativeHandle, ioas: number): BigUint64Array;
  /** IOMMU_HWPT_ALLOC of a kernel-managed page table for bound device `devId` over `ptId`. */
  iommufdHwptAlloc(iommufd: NativeHandle, devId: number, ptId: number, flags: number): number;
  /** IOMMU_GET_HW_INFO for bound device `devId`: iommu_hw_info_type, capabilities, the raw record. */
  iommufdGetHwInfo(
    iommufd: NativeHandle,
    devId: number,
  ): { type: number; capabilities: bigint; data: Buffer };
  /** IOMMU_IOAS_MAP at exactly `iova` (IOMMU_IOAS_MAP_FIXED_IOVA) of a mapping or guest memory. */
  iommufdIoasMap(
    iommufd: NativeHandle,
    ioas: number,
    memory: NativeMappingHandle | NativeGuestMemoryHandle,
    offset: number,
    iova: number,
    size: number,
    read: boolean,
    write: boolean,
  ): void;
  /** iommufdIoasMap on the libuv thread pool. */
  iommufdIoasMapAsync(
    iommufd: NativeHandle,
    ioas: number,
    memory: NativeMappingHandle | NativeGuestMemoryHandle,
    offset: number,
    iova: number,
    size: number,
    read: boolean,
    write: boolean,
  ): Promise<void>;
  /** IOMMU_IOAS_UNMAP; returns the bytes the kernel unmapped. */
  iommufdIoasUnmap(iommufd: NativeHandle, ioas: number, iova: number, size: number): number;
  /** VFIO_DEVICE_BIND_IOMMUFD of a device cdev fd; returns the device's ID in the iommufd. */
  vfioDeviceBindIommufd(device: NativeHandle, iommufd: NativeHandle): number;
  /** VFIO_DEVICE_BIND_IOMMUFD on the thread pool, on dups of both fds. */
  vfioDeviceBindIommufdAsync(device: NativeHandle, iommufd: NativeHandle): Promise<number>;
  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT; returns the page table attached (an HWPT ID). */
  vfioDeviceAttachIommufdPt(device: NativeHandle, ptId: number): number;
  /** VFIO_DEVICE_DETACH_IOMMUFD_PT. */
  vfioDeviceDetachIommufdPt(device: NativeHandle): void;
  /** What the addon's iommufd and cdev code was built with: ioctl numbers, sizes, field offsets. */
  readonly iommufdUapi: Readonly<Record<string, number>>;

  /** VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, raw (parsed in lib/vfio/hot-reset). */
  vfioHotResetInfo(device: NativeHandle): Buffer;
  /** VFIO_DEVICE_PCI_HOT_RESET with the fds of every affected group. */
  vfioHotReset(device: NativeHandle, groupFds: Int32Array): void;
  /** VFIO_DEVICE_PCI_HOT_RESET on the thread pool, on dups of the device and group fds. */
  vfioHotResetAsync(device: NativeHandle, groupFds: Int32Array): Promise<void>;

  // Device migration (native/migration.cc); decoded and driven in lib/vfio/migration*.ts.
  /**
   * VFIO_DEVICE_FEATURE with `data` (or `outSize` zero bytes) after the 8-byte header; returns the
   * data part as the kernel left it. Not for setting the migration state (vfioMigSetState is).
   */
  vfioDeviceFeature(
    device: NativeHandle,
    flags: number,
    data: Uint8Array | undefined,
    outSize: number,
  ): Buffer;
  /** VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE set: [the state asked for, the data fd the arc returned, or null]. */
  vfioMigSetState(device: NativeHandle, state: number): [number, NativeHandle | null];
  /** vfioMigSetState on the thread pool, on a dup of the device fd. */
  vfioMigSetStateAsync(device: NativeHandle, state: number): Promise<[number, NativeHandle | null]>;
  /** One read() of a migration data fd on the thread pool: its bytes (none at the end). */
  migDataRead(dataFd: NativeHandle, length: number): Promise<Buffer>;
  /** One write() to a migration data fd on the thread pool: how many bytes it took. */
  migDataWrite(dataFd: NativeHandle, data: Uint8Array): Promise<number>;
  /** VFIO_MIG_GET_PRECOPY_INFO on a data fd: struct vfio_precopy_info as bytes. */
  migPrecopyInfo(dataFd: NativeHandle): Buffer;
  /** DMA_LOGGING_START over (iova, length) pairs; returns the page size the device chose. */
  vfioDmaLoggingStart(device: NativeHandle, pageSize: bigint, ranges: BigUint64Array): bigint;
  /** DMA_LOGGING_REPORT: sets a bit in `bitmap` per written page of [iova, iova + length). */
  vfioDmaLoggingReport(
    device: NativeHandle,
    iova: bigint,
    length: bigint,
    pageSize: bigint,
    bitmap: BigUint64Array,
  ): void;
}

/** An interrupt watcher inside the addon. Opaque to JavaScript. */
export interface NativeIrqWatcher {
  readonly __vfioBridgeIrqWatcher: never;
}

/** Thrown by the first native use when the addon cannot be loaded; `cause` is the loader's error. */
export class NativeAddonError extends VfioBridgeError {
  override readonly name: string = 'NativeAddonError';
  constructor(cause: unknown) {
    const why = (cause instanceof Error ? cause.message : String(cause)).split('\n')[0];
    super({
      message: `vfio-bridge: cannot load its native addon (${why})`,
      code: 'ERR_VFIO_BRIDGE_NO_ADDON',
      hint:
        'VFIO and KVM need Linux x86-64 with the prebuild or a local build (npm rebuild vfio-bridge, ' +
        'with python3, make and g++); vfio-bridge/memory works without it',
      cause,
    });
  }
}

const onLoad: ((binding: NativeBinding) => void)[] = [];
let state: 'unloaded' | 'loaded' | NativeAddonError = 'unloaded';

function load(): NativeBinding {
  if (state instanceof NativeAddonError) throw state;
  let addon: NativeBinding;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
    addon = nodeGypBuild(path.join(__dirname, '..')) as NativeBinding;
  } catch (e) {
    throw (state = new NativeAddonError(e));
  }
  // From here on every property is an own data property of `native`: the loader below is never
  // consulted again, and hot call sites see a plain object.
  Object.defineProperties(native, Object.getOwnPropertyDescriptors(addon));
  state = 'loaded';
  for (const hook of onLoad) hook(native);
  return native;
}

/**
 * The addon, loaded on first property access. Until then `native` is an empty object whose
 * prototype is a loader: the first lookup that misses loads the addon, copies its exports onto
 * `native` and answers from them.
 */
export const native: NativeBinding = Object.create(
  new Proxy(Object.create(null) as object, {
    get: (_target, key) => (state === 'loaded' ? undefined : Reflect.get(load(), key)),
  }),
) as NativeBinding;

/**
 * onNativeLoad: runs `hook` once the addon is loaded (now, if it already is), before the access
 * that loaded it returns. For per-realm setup that needs the addon: the error factory, the
 * accessors' scratch views, the exit record's layout.
 */
export function onNativeLoad(hook: (binding: NativeBinding) => void): void {
  if (state === 'loaded') hook(native);
  else onLoad.push(hook);
}

// Load now (see the top of this file); a failure is kept in `state` and thrown at the first use.
try {
  load();
} catch {
  // state holds the NativeAddonError
}
