/**
 * VfioPciDevice: configuration-space virtualization, and the wiring of the parts other files build.
 * It is past 400 lines because it is the device's whole public surface; apart from configuration
 * space, each method is one call into the file that does the work: build.ts (the steps of an open),
 * open.ts (opening by BDF), region.ts, bar-map.ts, msix-setup.ts, quirk-install.ts, rom.ts, dump.ts
 * and reset.ts.
 */
import { ArgRangeError, closedError } from '../base/error';
import { EventEmitter } from 'node:events';
import type { PciBar } from './bar';
import { unmapBars, updateMappings } from './bar-map';
import { buildDevice, type BuildStep, type PciDeviceParts, type VfioPciDeviceOptions } from './build';
import { runSteps, runStepsAsync } from '../base/steps';
import type { MapInfoRange, SystemAddressSpaces } from './system-address-spaces';
import { type EmulatedConfig, mergeBits, type PciCapability } from './config';
import {
  PCI_BASE_ADDRESS_0,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_PM_CTRL,
  PCI_ROM_ADDRESS,
} from './constants';
import { VFIO_PCI_CONFIG_REGION_INDEX } from '../vfio/uapi';
import { type DumpAsyncOptions, type DumpOptions, type DumpSource, dumpBar, dumpBarAsync } from './dump';
import { PciInterrupts } from './interrupts';
import type { Msix } from './msix';
import {
  mdevRoute,
  openVfioDevice,
  openVfioDeviceAsync,
  type OpenByBdfOptions,
  pciRoute,
  type PciDeviceOwnership,
} from './open';
import { claim } from './owners';
import { type BarState, closeMmaps, type RegionIo } from './region';
import type { GuestErrorSink } from '../base/guest-error';
import type { DeviceErrorEvent } from './report';
import {
  type PciResetContext,
  type PciResetMethod,
  type PciResetMode,
  resetPciDevice,
  resetPciDeviceAsync,
} from './reset';
import { type PciRom, ROM_SLOT } from './rom';
import { checkValue } from '../base/checks';
import { checkInteger, hex, type VfioDeviceLike } from './types';

/** The events of a {@link VfioPciDevice}. */
export type VfioPciDeviceEvents = {
  /**
   * A guest access the device could not serve as asked (the reasons are listed on `DeviceErrorReason`).
   * @deprecated listen to `guest-error` on {@link VfioPciDevice.guestErrors} (source `pci`): the
   *   same report is its `detail`
   */
  'device-error': [DeviceErrorEvent];
};

/**
 * VfioPciDevice: a vfio-pci device assigned to a Node VMM, built as QEMU's vfio-pci builds it.
 *
 * For every BAR there is a `"<BDF> base BAR n"` region (handler-less I/O, see base-bar.ts) placed in
 * the PCI space at priority 1, holding the `"<BDF> BAR n"` region (one pread/pwrite per access),
 * which holds one `"<BDF> BAR n mmaps[i]"` ram-device region per mmap area (region.ts). Quirk
 * overlays sit at priority 1 inside the BAR region, and the `msix-table`/`msix-pba` overlays in the
 * base container. The guest's configuration space is passed through to the kernel except for the
 * BAR registers, the ROM register, an overridden vendor/device ID and the MSI-X control bits, which
 * are emulated here.
 */
export class VfioPciDevice extends EventEmitter<VfioPciDeviceEvents> implements Disposable {
  /** The device's address, used in every region name. */
  readonly bdf: string;
  /** The VFIO device behind it: config and BAR accesses, mmaps, interrupts and reset go through it. */
  readonly device: VfioDeviceLike;
  /** The bus whose memory and I/O spaces hold this device's BARs. */
  readonly bus: SystemAddressSpaces;
  /** Vendor and device IDs as the guest sees them (after any override). */
  readonly vendorId: number;
  /** Device ID as the guest sees it (after any override). */
  readonly deviceId: number;
  /** Vendor and device IDs of the physical device. */
  readonly physicalVendorId: number;
  /** Device ID of the physical device. */
  readonly physicalDeviceId: number;
  /** Size of configuration space (256 or 4096). */
  readonly configSize: number;
  /** Capabilities found in the device's configuration space. */
  readonly capabilities: readonly PciCapability[];
  /** The emulated MSI-X table, or null when the device has no MSI-X capability. */
  readonly msix: Msix | null;
  /** Interrupts: INTx, MSI and MSI-X as the guest set them up, mirrored on the host; REQ. */
  readonly irq: PciInterrupts;
  /**
   * Where the region changes a config write makes go (BARs placed or moved, decode turned on or
   * off), when not made at once. Null (the default): made inside {@link configWrite}. Otherwise the
   * write reaches the device and the emulated registers at once, and `update`, which places the BARs
   * as the registers then say, is handed to this function, to run later: a VMM runs it a turn of the
   * event loop on, holding the vCPU that wrote until it ran. The writes of one stretch hand over one
   * update (it reads the registers when it runs). `PcMachine` sets it while its vCPUs run: a guest's
   * decode toggle then holds the loop for the device write and for the region changes separately.
   */
  deferMappings: ((update: () => void) => void) | null = null;

  readonly #bars: (BarState | null)[];
  readonly #rom: BarState | null;
  readonly #emu: EmulatedConfig;
  readonly #io: RegionIo;
  #command: number;
  /** PMCSR power state (0 = D0); BARs decode only in D0, as in QEMU 10's PCI PM support. */
  #powerState = 0;
  /** An update is handed to {@link deferMappings} and has not run yet. */
  #mappingsDeferred = false;
  #closed = false;
  readonly #removeCloser: () => void;
  /** The group and what closes with the device, when it was opened by BDF. */
  #owner: PciDeviceOwnership | null;
  /** The emulated registers as open left them: what a guest-visible reset returns to. */
  readonly #emuAtOpen: Uint8Array;
  readonly #implemented: Uint8Array;

  /** Wires what the steps built (build.ts) and puts it on the bus. */
  private constructor(
    bus: SystemAddressSpaces,
    device: VfioDeviceLike,
    parts: PciDeviceParts,
    owner: PciDeviceOwnership | null,
  ) {
    // An asynchronous open gave the event loop turns: the bus may have closed meanwhile.
    if (bus.closed) throw closedError('VfioPciDevice.open', 'the SystemAddressSpaces');
    super();
    this.bus = bus;
    this.device = device;
    this.bdf = device.bdf;
    this.vendorId = parts.vendorId;
    this.deviceId = parts.deviceId;
    this.physicalVendorId = parts.physicalVendorId;
    this.physicalDeviceId = parts.physicalDeviceId;
    this.configSize = parts.configSize;
    this.capabilities = parts.capabilities;
    this.msix = parts.msix;
    this.#bars = parts.bars;
    this.#rom = parts.rom;
    this.#emu = parts.emu;
    this.#command = parts.command;
    this.#implemented = parts.implemented;
    this.#io = parts.io;
    this.#io.reporter.emitTo(this);
    this.irq = new PciInterrupts({
      bdf: this.bdf,
      device,
      emu: this.#emu,
      capabilities: this.capabilities,
      msix: this.msix,
      reporter: this.#io.reporter,
      command: () => this.#command,
      phys: (o, s) => this.#io.phys(o, s),
    });
    this.#emuAtOpen = this.#emu.value.slice();
    this.#owner = owner;
    this.#removeCloser = bus.onClose(() => this.close());
    claim(device, this);
  }

  /** The steps of an open (build.ts), then the device wired: run at once, or with turns between. */
  static *#build(
    bus: SystemAddressSpaces,
    device: VfioDeviceLike,
    opts: VfioPciDeviceOptions,
    owner: PciDeviceOwnership | null,
  ): Generator<BuildStep, VfioPciDevice> {
    const parts = yield* buildDevice(bus, device, opts);
    try {
      return new VfioPciDevice(bus, device, parts, owner);
    } catch (e) {
      parts.abandon();
      throw e;
    }
  }

  /**
   * open: build the region stacks of `device` and attach them to `bus`. BARs stay unmapped until the
   * guest programs their registers and enables decoding in the command register.
   */
  static open(
    bus: SystemAddressSpaces,
    device: VfioDeviceLike,
    opts: VfioPciDeviceOptions = {},
  ): VfioPciDevice {
    return runSteps(VfioPciDevice.#build(bus, device, opts, null));
  }

  /**
   * {@link VfioPciDevice.open} in steps (configuration space, the BARs found, each BAR's stack,
   * MSI-X, the quirks, the ROM), with a turn of the event loop after each, so that opening a device
   * never holds the loop for the whole of it. The device is the one open builds. It rejects with
   * ECLOSED when the bus closes meanwhile.
   */
  static async openAsync(
    bus: SystemAddressSpaces,
    device: VfioDeviceLike,
    opts: VfioPciDeviceOptions = {},
  ): Promise<VfioPciDevice> {
    return runStepsAsync(VfioPciDevice.#build(bus, device, opts, null));
  }

  /**
   * openByBdf: open the vfio-pci device at `bdf` into `opts.container` (type1) or `opts.iommu` (an
   * Ioas or a VfioBackend), or into an IOMMU context of its own of `opts.backend` (default `auto`:
   * iommufd through its cdev where the kernel offers it, else type1 through its group), and build it
   * on `bus`. Closing the device also closes the VFIO device, its group and a context it created.
   * The opening itself is open.ts's.
   */
  static openByBdf(bus: SystemAddressSpaces, bdf: string, opts: OpenByBdfOptions = {}): VfioPciDevice {
    return openVfioDevice(pciRoute(bdf), opts, (d, owner) =>
      runSteps(VfioPciDevice.#build(bus, d, opts, owner)),
    );
  }

  /**
   * {@link VfioPciDevice.openByBdf} with the device opened on the libuv thread pool (vfio-pci
   * enables it there, and may reset it) and built as {@link VfioPciDevice.openAsync} builds it, so
   * the event loop is held only for the group's ioctls and one step of the build at a time.
   */
  static async openByBdfAsync(
    bus: SystemAddressSpaces,
    bdf: string,
    opts: OpenByBdfOptions = {},
  ): Promise<VfioPciDevice> {
    return openVfioDeviceAsync(pciRoute(bdf), opts, (d, owner) =>
      runStepsAsync(VfioPciDevice.#build(bus, d, opts, owner)),
    );
  }

  /**
   * openByMdev: open mediated device `uuid` (a vfio-pci mdev, such as the kernel's mtty sample)
   * through its IOMMU group, as {@link VfioPciDevice.openByBdf} opens a PCI function, and build it
   * on `bus`. Its name in region names, reports and `bdf` is its UUID.
   */
  static openByMdev(bus: SystemAddressSpaces, uuid: string, opts: OpenByBdfOptions = {}): VfioPciDevice {
    return openVfioDevice(mdevRoute(uuid), opts, (d, owner) =>
      runSteps(VfioPciDevice.#build(bus, d, opts, owner)),
    );
  }

  /** {@link VfioPciDevice.openByMdev} as {@link VfioPciDevice.openByBdfAsync} does it. */
  static async openByMdevAsync(
    bus: SystemAddressSpaces,
    uuid: string,
    opts: OpenByBdfOptions = {},
  ): Promise<VfioPciDevice> {
    return openVfioDeviceAsync(mdevRoute(uuid), opts, (d, owner) =>
      runStepsAsync(VfioPciDevice.#build(bus, d, opts, owner)),
    );
  }

  /** The six BARs; null for an unimplemented BAR or the upper half of a 64-bit one. */
  get bars(): readonly (PciBar | null)[] {
    return this.#bars;
  }

  /** The expansion ROM, or null when the device has none. */
  get rom(): PciRom | null {
    const r = this.#rom;
    return r ? { size: r.size, address: r.address, region: r.base } : null;
  }

  /** The device's power state from PMCSR (0 = D0 ... 3 = D3hot); outside D0 no BAR is mapped. */
  get powerState(): number {
    return this.#powerState;
  }

  /** The command register as the guest last wrote it. */
  get command(): number {
    return this.#command;
  }

  /**
   * The VFIO group this object opened the device from (openByBdf on type1); null when the caller
   * opened the device and owns its group, or when it came through its cdev (iommufd).
   */
  get group(): {
    /** The group's file descriptor (an open `/dev/vfio/<group>`); it closes with the device. */
    readonly fd: number;
  } | null {
    return this.#closed ? null : (this.#owner?.group ?? null);
  }

  /**
   * The file KVM's VFIO device is told about (KVM_DEV_VFIO_FILE_ADD) for a device this object
   * opened (openByBdf): its group on type1, its cdev on iommufd; null otherwise.
   */
  get vfioFile(): {
    /** The file descriptor (the group's on type1, the cdev's on iommufd). */
    readonly fd: number;
  } | null {
    return this.#closed || this.#owner === null ? null : this.#owner.vfioFile;
  }

  /** The IOMMU backend the device was opened through, when this object opened it (openByBdf). */
  get backend(): 'type1' | 'iommufd' | null {
    return this.#owner?.backend ?? null;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** How many guest accesses the device could not serve as asked since it was opened. */
  get deviceErrorCount(): number {
    return this.#io.reporter.count;
  }

  /**
   * Where the device reports what the guest does wrong (source `pci`): the sink given as
   * `guestErrors` (a machine's), else its bus's.
   */
  get guestErrors(): GuestErrorSink {
    return this.#io.reporter.sink;
  }

  // ---- configuration space ------------------------------------------------------------------

  /**
   * One read of configuration space as the guest sees it (emulated bits merged over the device's).
   * Bytes past the end of config space read as ones, and a read the device fd refuses as all-ones;
   * both are reported to {@link VfioPciDevice.guestErrors}, never thrown. A size other than 1, 2 or 4 or an
   * offset that is not a non-negative integer is a programming error (RangeError/TypeError).
   */
  configRead(offset: number, size: 1 | 2 | 4): number {
    this.#checkOpen();
    this.#checkConfig(offset, size);
    if (offset + size > this.configSize) {
      // As a PCI host does: nothing answers past the end, so those bytes read as ones.
      this.#reportConfig('config-range', false, offset, size);
      let v = 0;
      for (let i = size - 1; i >= 0; i--) {
        const at = offset + i;
        v = v * 256 + (at < this.configSize ? this.#configReadIn(at, 1) : 0xff);
      }
      return v;
    }
    return this.#configReadIn(offset, size);
  }

  #configReadIn(offset: number, size: 1 | 2 | 4): number {
    const mask = this.#emu.maskAt(offset, size);
    const all = size === 4 ? 0xffffffff : 2 ** (size * 8) - 1;
    const emu = this.#emu.valueAt(offset, size);
    if (mask === all) return emu >>> 0;
    const phys = Number(this.#io.read(VFIO_PCI_CONFIG_REGION_INDEX, 'config', offset, size));
    return mergeBits(mask, emu, phys, size);
  }

  /**
   * One write of configuration space. Everything is written to the device, where the kernel does its
   * own filtering; BAR, ROM, command and MSI-X control changes also update the region stacks.
   * Bytes past the end of config space are dropped, and a write the device fd refuses is reported.
   */
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.#checkOpen();
    this.#checkConfig(offset, size);
    checkValue(size, value, `${this.bdf} config write at ${hex(offset)}`);
    if (offset + size > this.configSize) {
      // As QEMU does, the bytes inside config space are written and the rest are dropped.
      this.#reportConfig('config-range', true, offset, size);
      for (let i = 0; offset + i < this.configSize && i < size; i++) {
        this.#configWriteIn(offset + i, 1, Math.floor(value / 2 ** (8 * i)) & 0xff);
      }
      return;
    }
    const implemented = this.#implemented.subarray(offset, offset + size);
    // Passed on all the same, as QEMU does: the kernel drops what no register takes.
    if (!implemented.every((b) => b)) this.#reportConfig('config-unimplemented', true, offset, size, value);
    this.#configWriteIn(offset, size, value);
  }

  #configWriteIn(offset: number, size: 1 | 2 | 4, value: number): void {
    // A write the kernel refuses is reported; the emulated bits still follow the guest, as in QEMU.
    this.#io.write(VFIO_PCI_CONFIG_REGION_INDEX, 'config', offset, size, value);
    this.#emu.write(offset, size, value);
    const end = offset + size;
    if (overlaps(offset, end, PCI_COMMAND, 2)) {
      for (let i = 0; i < size; i++) {
        const reg = offset + i;
        if (reg !== PCI_COMMAND && reg !== PCI_COMMAND + 1) continue;
        const b = Math.floor(value / 2 ** (8 * i)) & 0xff;
        const shift = (reg - PCI_COMMAND) * 8;
        this.#command = (this.#command & ~(0xff << shift)) | (b << shift);
      }
    }
    const pm = this.capabilities.find((c) => !c.extended && c.id === PCI_CAP_ID_PM);
    let powerChanged = false;
    if (pm !== undefined && overlaps(offset, end, pm.offset + PCI_PM_CTRL, 2)) {
      // The kernel performs the transition on the write; the state read back is the one in force.
      const state =
        Number(this.#io.read(VFIO_PCI_CONFIG_REGION_INDEX, 'config', pm.offset + PCI_PM_CTRL, 2)) & 3;
      powerChanged = state !== this.#powerState;
      this.#powerState = state;
    }
    if (
      powerChanged ||
      overlaps(offset, end, PCI_COMMAND, 2) ||
      overlaps(offset, end, PCI_BASE_ADDRESS_0, 24) ||
      overlaps(offset, end, PCI_ROM_ADDRESS, 4)
    ) {
      this.#updateMappings();
    }
    const msix = this.msix;
    if (msix && overlaps(offset, end, msix.capOffset + PCI_MSIX_FLAGS, 2)) {
      const ctrl = this.#emu.valueAt(msix.capOffset + PCI_MSIX_FLAGS, 2);
      msix.setControl((ctrl & PCI_MSIX_FLAGS_ENABLE) !== 0, (ctrl & PCI_MSIX_FLAGS_MASKALL) !== 0);
    }
    this.irq.configWritten(offset, size);
  }

  /** Places the BARs as the registers say: now, or through {@link deferMappings}. */
  #updateMappings(): void {
    const defer = this.deferMappings;
    if (defer === null) return this.#applyMappings();
    if (this.#mappingsDeferred) return;
    this.#mappingsDeferred = true;
    defer(() => {
      this.#mappingsDeferred = false;
      if (!this.#closed) this.#applyMappings();
    });
  }

  #applyMappings(): void {
    const command = this.#powerState === 0 ? this.#command : 0;
    updateMappings(this.bus, this.#emu, this.#bars, this.#rom, command);
  }

  #reportConfig(
    reason: 'config-range' | 'config-unimplemented',
    isWrite: boolean,
    offset: number,
    size: number,
    value?: number,
  ): void {
    this.#io.reporter.report({
      bdf: this.bdf,
      reason,
      isWrite,
      where: 'config',
      offset,
      size,
      ...(value !== undefined ? { value } : {}),
    });
  }

  #checkConfig(offset: number, size: number): void {
    if (size !== 1 && size !== 2 && size !== 4) {
      throw new ArgRangeError(`${this.bdf}: config access size ${size} is not 1, 2 or 4`);
    }
    checkInteger(offset, `${this.bdf} config offset`);
  }

  // ---- inspection ----------------------------------------------------------------------------

  /** The device's flat ranges in both spaces, each with how accesses to it are served. */
  mapinfo(): MapInfoRange[] {
    this.#checkOpen();
    return this.bus.mapinfo().filter((r) => r.bdf === this.bdf);
  }

  /**
   * dump: an xp-like hex dump of `length` bytes at `offset` in BAR `bar` (6 for the ROM), read through
   * the same dispatch path as the guest, so quirks and overlays show. The width defaults to the
   * widest every region in the range accepts and may never exceed it.
   */
  dump(bar: number, offset: number, length: number, opts: DumpOptions = {}): string {
    this.#checkOpen();
    return dumpBar(this.#dumpSource(), bar, offset, length, opts);
  }

  /**
   * {@link VfioPciDevice.dump} with a turn of the event loop between chunks of accesses, for large
   * ranges of slow (fd-backed) BARs. It rejects with an {@link AbortError} once `opts.signal`
   * aborts, and when the device closes or the guest moves or unmaps the BAR meanwhile.
   */
  async dumpAsync(bar: number, offset: number, length: number, opts: DumpAsyncOptions = {}): Promise<string> {
    this.#checkOpen();
    return dumpBarAsync(this.#dumpSource(), bar, offset, length, opts);
  }

  #dumpSource(): DumpSource {
    return {
      bdf: this.bdf,
      bus: this.bus,
      bar: (i) => (i === ROM_SLOT ? this.#rom : (this.#bars[i] ?? null)),
      checkOpen: () => this.#checkOpen(),
    };
  }

  // ---- lifetime ------------------------------------------------------------------------------

  /**
   * reset: QEMU's device reset. Host interrupts and decode/bus master go off, a reset method is
   * picked (function reset, then hot reset, then PM reset), and then `mode` decides what the guest
   * sees (see {@link PciResetMode}; default `'guest'`, as on a system reset). Returns the method used.
   */
  reset(mode: PciResetMode = 'guest'): PciResetMethod {
    this.#checkOpen();
    return resetPciDevice(this.#resetContext(), mode);
  }

  /**
   * {@link reset} with the reset ioctls on the libuv thread pool (a function reset waits 100 ms and
   * more, a bus reset a second or more); the device's state is handled on this thread as reset does.
   */
  async resetAsync(mode: PciResetMode = 'guest'): Promise<PciResetMethod> {
    this.#checkOpen();
    return resetPciDeviceAsync(this.#resetContext(), mode);
  }

  #resetContext(): PciResetContext {
    return {
      bdf: this.bdf,
      device: this.device,
      capabilities: this.capabilities,
      irq: this.irq,
      command: () => this.#command,
      configWrite: (o, s, v) => this.configWrite(o, s, v),
      physWrite: (o, s, v) => this.#io.write(VFIO_PCI_CONFIG_REGION_INDEX, 'config', o, s, v),
      phys: (o, s) => this.#io.phys(o, s),
      restoreEmulated: () => this.#emu.value.set(this.#emuAtOpen),
    };
  }

  /** Removes the BARs from the bus and closes every mapping. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#teardown();
    this.#release();
  }

  /**
   * {@link close}, with the VFIO device's fd closed on the libuv thread pool (the kernel resets the
   * device then), where the device can (lib/vfio's Device); the rest as close() does it.
   */
  async closeAsync(): Promise<void> {
    if (this.#closed) return;
    this.#teardown();
    const d = this.device as VfioDeviceLike & { closeAsync?: () => Promise<void> };
    try {
      if (this.#owner !== null && typeof d.closeAsync === 'function') await d.closeAsync();
    } finally {
      this.#release();
    }
  }

  /** What close() undoes before the VFIO objects go: interrupts, the BARs' regions and mmaps. */
  #teardown(): void {
    this.#closed = true;
    this.#removeCloser();
    this.irq.close();
    unmapBars(this.bus, this.#bars, this.#rom);
    closeMmaps(this.#bars);
  }

  /** Closes what an open by BDF opened: the VFIO device, its group and a container of its own. */
  #release(): void {
    const owner = this.#owner;
    this.#owner = null;
    owner?.release();
  }

  /** Same as {@link VfioPciDevice.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
  /** Same as {@link VfioPciDevice.closeAsync}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.closeAsync();
  }

  #checkOpen(): void {
    if (this.#closed) throw closedError('VfioPciDevice', `VfioPciDevice ${this.bdf}`, this.bdf);
  }
}

function overlaps(start: number, end: number, regStart: number, regSize: number): boolean {
  return start < regStart + regSize && regStart < end;
}
