import { ArgRangeError, ArgTypeError } from '../base/error';
import { EventEmitter } from 'node:events';
import { implementedConfigBytes } from './config-map';
import { type AccessSize, MemoryRegion, type MemoryRegionOps, transaction } from '../memory';
import type { RegionInfo } from '../vfio';
import { VfioError, closedError } from '../base/error';
import { type BarMmap, type BarType, barAddress, decodeBarRegister, type PciBar } from './bar';
import type { MapInfoRange, PciBus } from './bus';
import { EmulatedConfig, mergeBits, type PciCapability, walkCapabilities } from './config';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_DEVICE_ID,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_BIRMASK,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
  PCI_NUM_BARS,
  PCI_PM_CTRL,
  PCI_ROM_ADDRESS,
  PCI_VENDOR_ID,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_ROM_REGION_INDEX,
} from './constants';
import { formatDump } from './dump';
import { PciInterrupts } from './interrupts';
import {
  type PciResetContext,
  type PciResetMethod,
  type PciResetMode,
  resetPciDevice,
  resetPciDeviceAsync,
} from './reset';
import { Msix, type MsixLayout } from './msix';
import { baseBarRegion } from './base-bar';
import { checkUndriven, claim } from './owners';
import { resetCommand } from './reset-state';
import { DEFAULT_QUIRKS, type QuirkContext, type QuirkDefinition, quirkMatches } from './quirks';
import { type DeviceErrorEvent, DeviceReporter, type DeviceReportOptions, isVfioError } from './report';
import {
  checkAccessSize,
  checkInteger,
  checkValue,
  hex,
  isPciRegionTag,
  type PciRegionRole,
  type PciRegionTag,
  type VfioDeviceLike,
} from './types';

/** Where MSI-X structures go: left in place, or moved to a BAR (QEMU's x-msix-relocation). */
export type MsixRelocation = 'off' | 'auto' | 'bar0' | 'bar1' | 'bar2' | 'bar3' | 'bar4' | 'bar5';

/** Options of {@link VfioPciDevice.open}. */
export interface VfioPciDeviceOptions extends DeviceReportOptions {
  /** Vendor ID presented to the guest and used for quirk matching (QEMU's x-pci-vendor-id). */
  vendorId?: number;
  /** Device ID presented to the guest and used for quirk matching (QEMU's x-pci-device-id). */
  deviceId?: number;
  /** Move the MSI-X table and PBA to the end of a BAR, or to a spare BAR (default 'off'). */
  msixRelocation?: MsixRelocation;
  /** Quirks to match against (default {@link DEFAULT_QUIRKS}). */
  quirks?: readonly QuirkDefinition[];
  /** Serve every BAR through the fd, never mmap (QEMU's x-no-mmap). */
  noMmap?: boolean;
}

/** Options of {@link VfioPciDevice.openByBdf}. */
export interface OpenByBdfOptions extends VfioPciDeviceOptions {
  /**
   * The container to attach the device's group to, for VMMs with several devices. Without it the
   * device gets a container of its own, closed with the device.
   */
  container?: import('../vfio').Container;
}

/** Options of {@link VfioPciDevice.dump}. */
export interface DumpOptions {
  /** Access width; by default the widest every region in the range accepts. */
  width?: AccessSize;
}

/** The expansion ROM as the guest sees it. */
export interface PciRom {
  readonly size: number;
  readonly address: number | null;
  /** The "vfio[<BDF>].rom" region, read through the fd. */
  readonly region: MemoryRegion;
}

/**
 * Overlays inside the base container use QEMU's priority 0; they win over the BAR region (also 0)
 * because they are added after it, as in QEMU.
 */
const MSIX_PRIORITY = 0;
/** Every BAR container goes into the PCI space at priority 1, as pci_update_mappings does. */
const BAR_PRIORITY = 1;
/** An expanded sub-page BAR drops to 0 so it cannot hide a BAR sharing its page. */
const SUBPAGE_PRIORITY = 0;
const ROM_SLOT = 6;

class BarState implements PciBar {
  address: number | null = null;
  expanded = false;
  mmaps: BarMmap[] = [];
  quirks: string[] = [];
  mmapError: Error | null = null;
  expandable = false;
  region: MemoryRegion | null = null;
  base!: MemoryRegion;

  constructor(
    readonly index: number,
    readonly type: BarType,
    readonly prefetchable: boolean,
    public size: number,
    readonly regionSize: number,
    readonly typeBits: number,
  ) {}
}

interface MmapArea {
  offset: number;
  size: number;
}

/** The events of a {@link VfioPciDevice}. */
export type VfioPciDeviceEvents = {
  /** A guest access the device could not serve as asked (the reasons are listed on `DeviceErrorReason`). */
  'device-error': [DeviceErrorEvent];
};

/**
 * VfioPciDevice: a vfio-pci device assigned to a Node VMM, built as QEMU's vfio-pci builds it.
 *
 * For every BAR there is a `"<BDF> base BAR n"` region (handler-less I/O, see base-bar.ts) placed in
 * the PCI space at priority 1,
 * holding the `"<BDF> BAR n"` region (one pread/pwrite per access), which holds one
 * `"<BDF> BAR n mmaps[i]"` ram-device region per mmap area. Quirk overlays sit at priority 1 inside
 * the BAR region, and the `msix-table`/`msix-pba` overlays in the base container. The guest's
 * configuration space is passed through to the kernel except for the BAR registers, the ROM
 * register, an overridden vendor/device ID and the MSI-X control bits, which are emulated here.
 */
export class VfioPciDevice extends EventEmitter<VfioPciDeviceEvents> implements Disposable {
  /** The device's address, used in every region name. */
  readonly bdf: string;
  readonly device: VfioDeviceLike;
  readonly bus: PciBus;
  /** Vendor and device IDs as the guest sees them (after any override). */
  readonly vendorId: number;
  readonly deviceId: number;
  /** Vendor and device IDs of the physical device. */
  readonly physicalVendorId: number;
  readonly physicalDeviceId: number;
  /** Size of configuration space (256 or 4096). */
  readonly configSize: number;
  /** Capabilities found in the device's configuration space. */
  readonly capabilities: readonly PciCapability[];
  /** The emulated MSI-X table, or null when the device has no MSI-X capability. */
  readonly msix: Msix | null;
  /** Interrupts: INTx, MSI and MSI-X as the guest set them up, mirrored on the host; REQ. */
  readonly irq: PciInterrupts;

  #bars: (BarState | null)[] = [];
  #rom: BarState | null = null;
  #emu: EmulatedConfig;
  #command: number;
  /** PMCSR power state (0 = D0); BARs decode only in D0, as in QEMU 10's PCI PM support. */
  #powerState = 0;
  #closed = false;
  #removeCloser: () => void;
  #release: (() => void) | null = null;
  #group: { readonly fd: number } | null = null;
  #reporter: DeviceReporter;
  /** The emulated registers as open left them: what a guest-visible reset returns to. */
  #emuAtOpen: Uint8Array;
  #implemented: Uint8Array;

  private constructor(bus: PciBus, device: VfioDeviceLike, opts: VfioPciDeviceOptions) {
    if (typeof device !== 'object' || device === null || typeof device.regionInfo !== 'function') {
      throw new ArgTypeError('VfioPciDevice.open needs a VFIO device (bdf, regionInfo, read, write, map)');
    }
    if (bus.closed) throw closedError('VfioPciDevice.open', 'the PciBus');
    super();
    checkUndriven(device, bus);
    this.bus = bus;
    this.device = device;
    this.bdf = device.bdf;
    this.#reporter = new DeviceReporter(opts, this);

    const cfg = device.regionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
    if (cfg.size < 0x40)
      throw new ArgRangeError(`${this.bdf}: config region of ${cfg.size} bytes is too small`);
    this.configSize = Math.min(cfg.size, 4096);
    this.#emu = new EmulatedConfig(this.configSize);

    this.physicalVendorId = this.#phys(PCI_VENDOR_ID, 2);
    this.physicalDeviceId = this.#phys(PCI_DEVICE_ID, 2);
    if (opts.vendorId !== undefined) checkInteger(opts.vendorId, 'vendorId override', 0xffff);
    if (opts.deviceId !== undefined) checkInteger(opts.deviceId, 'deviceId override', 0xffff);
    this.vendorId = opts.vendorId ?? this.physicalVendorId;
    this.deviceId = opts.deviceId ?? this.physicalDeviceId;
    if (opts.vendorId !== undefined) this.#emu.emulate(PCI_VENDOR_ID, 2, BigInt(this.vendorId), 0xffffn, 0n);
    if (opts.deviceId !== undefined) this.#emu.emulate(PCI_DEVICE_ID, 2, BigInt(this.deviceId), 0xffffn, 0n);
    // The guest starts from the reset state, on the device too, as QEMU presents it.
    this.#command = resetCommand(this.#phys(PCI_COMMAND, 2));
    this.#fdWrite(VFIO_PCI_CONFIG_REGION_INDEX, 'config', PCI_COMMAND, 2, this.#command);
    this.capabilities = walkCapabilities((o, s) => this.#phys(o, s), this.configSize);
    this.#implemented = implementedConfigBytes(this.capabilities, (o, s) => this.#phys(o, s));

    // Discover the BARs and their mmap areas, then let MSI-X trim or relocate before anything is built.
    const infos: RegionInfo[] = [];
    const areas: MmapArea[][] = [];
    for (let i = 0; i < PCI_NUM_BARS; i++) {
      const info = device.regionInfo(i);
      infos.push(info);
      areas.push([]);
      if (info.size === 0) {
        this.#bars.push(null);
        continue;
      }
      const reg = this.#phys(PCI_BASE_ADDRESS_0 + 4 * i, 4);
      const d = decodeBarRegister(reg);
      this.#bars.push(new BarState(i, d.type, d.prefetchable, info.size, info.size, d.typeBits));
      if (!opts.noMmap && info.mappable && d.type !== 'io') areas[i] = this.#mmapAreas(info);
    }
    const layout = this.#msixEarlySetup(infos, areas, opts.msixRelocation ?? 'off');

    try {
      for (const bar of this.#bars) if (bar) this.#registerBar(bar, areas[bar.index]);
      this.msix = layout ? this.#msixSetup(layout.layout, layout.relocated) : null;
      this.#installQuirks(opts.quirks ?? DEFAULT_QUIRKS);
      this.#setupRom();
      this.#emulateBarRegisters();
      this.irq = new PciInterrupts({
        bdf: this.bdf,
        device,
        emu: this.#emu,
        capabilities: this.capabilities,
        msix: this.msix,
        reporter: this.#reporter,
        command: () => this.#command,
        phys: (o, s) => this.#phys(o, s),
      });
      this.#emuAtOpen = this.#emu.value.slice();
    } catch (e) {
      // Nothing is on the bus yet; only the mappings made so far need undoing.
      for (const bar of this.#bars) for (const m of bar?.mmaps ?? []) m.memory.close();
      throw e;
    }
    this.#removeCloser = bus.onClose(() => this.close());
    claim(device, this);
  }

  /**
   * open: build the region stacks of `device` and attach them to `bus`. BARs stay unmapped until the
   * guest programs their registers and enables decoding in the command register.
   */
  static open(bus: PciBus, device: VfioDeviceLike, opts: VfioPciDeviceOptions = {}): VfioPciDevice {
    return new VfioPciDevice(bus, device, opts);
  }

  /**
   * openByBdf: open the vfio-pci device at `bdf` (its group attached to `opts.container`, or to a new
   * container with the best IOMMU type) and build it on `bus`. Closing the device also closes the
   * VFIO device, its group and a container it created.
   */
  static openByBdf(bus: PciBus, bdf: string, opts: OpenByBdfOptions = {}): VfioPciDevice {
    const opening = VfioPciDevice.#openGroup(bdf, opts);
    try {
      return opening.build(bus, opening.group.openDevice(bdf), opts);
    } catch (e) {
      opening.unwind();
      throw e;
    }
  }

  /**
   * {@link VfioPciDevice.openByBdf} with the device opened on the libuv thread pool (vfio-pci
   * enables it there, and may reset it), so the event loop is held only for the group's ioctls and
   * reading the device's layout.
   */
  static async openByBdfAsync(bus: PciBus, bdf: string, opts: OpenByBdfOptions = {}): Promise<VfioPciDevice> {
    const opening = VfioPciDevice.#openGroup(bdf, opts);
    try {
      const d = await opening.group.openDeviceAsync(bdf);
      const r = opening.build(bus, d, opts);
      return r;
    } catch (e) {
      opening.unwind();
      throw e;
    }
  }

  /**
   * The first half of openByBdf: the group opened and attached to the container; `build` wraps the
   * device opened from it, and `unwind` closes whatever was opened so far.
   */
  static #openGroup(
    bdf: string,
    opts: OpenByBdfOptions,
  ): {
    group: import('../vfio').Group;
    build: (bus: PciBus, device: import('../vfio').Device, o: VfioPciDeviceOptions) => VfioPciDevice;
    unwind: () => void;
  } {
    if (typeof bdf !== 'string') throw new ArgTypeError(`BDF must be a string, got ${typeof bdf}`);
    // Loaded here only: the rest of lib/pci runs without the native addon.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const vfio = require('../vfio') as typeof import('../vfio');
    const own = opts.container === undefined;
    const container = opts.container ?? vfio.Container.open();
    const cleanup: (() => void)[] = own ? [() => container.close()] : [];
    const unwind = (): void => {
      for (const fn of cleanup.splice(0).reverse()) fn();
    };
    try {
      const group = vfio.Group.openByBdf(bdf);
      cleanup.push(() => group.close());
      group.setContainer(container);
      if (container.iommuType === null) container.setIommu();
      const build = (
        bus: PciBus,
        device: import('../vfio').Device,
        o: VfioPciDeviceOptions,
      ): VfioPciDevice => {
        cleanup.push(() => device.close());
        const dev = new VfioPciDevice(bus, device, o);
        dev.#release = unwind;
        dev.#group = group;
        return dev;
      };
      return { group, build, unwind };
    } catch (e) {
      unwind();
      throw e;
    }
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
   * The VFIO group this object opened the device from (openByBdf), for KVM's VFIO device; null when
   * the caller opened the device and owns its group.
   */
  get group(): { readonly fd: number } | null {
    return this.#closed ? null : this.#group;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** How many guest accesses the device could not serve as asked since it was opened. */
  get deviceErrorCount(): number {
    return this.#reporter.count;
  }

  // ---- configuration space ------------------------------------------------------------------

  /**
   * One read of configuration space as the guest sees it (emulated bits merged over the device's).
   * Bytes past the end of config space read as ones, and a read the device fd refuses as all-ones;
   * both are reported as `device-error` events, never thrown. A size other than 1, 2 or 4 or an
   * offset that is not a non-negative integer is a programming error (RangeError/TypeError).
   */
  configRead(offset: number, size: 1 | 2 | 4): number {
    this.#checkOpen();
    this.#checkConfig(offset, size);
    if (offset + size > this.configSize) {
      // As a PCI host does: nothing answers past the end, so those bytes read as ones.
      this.#reporter.report({
        bdf: this.bdf,
        reason: 'config-range',
        isWrite: false,
        where: 'config',
        offset,
        size,
      });
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
    const phys = Number(this.#fdRead(VFIO_PCI_CONFIG_REGION_INDEX, 'config', offset, size));
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
    checkValue(value, size, `${this.bdf} config write at ${hex(offset)}`);
    if (offset + size > this.configSize) {
      // As QEMU does, the bytes inside config space are written and the rest are dropped.
      this.#reporter.report({
        bdf: this.bdf,
        reason: 'config-range',
        isWrite: true,
        where: 'config',
        offset,
        size,
      });
      for (let i = 0; offset + i < this.configSize && i < size; i++) {
        this.#configWriteIn(offset + i, 1, Math.floor(value / 2 ** (8 * i)) & 0xff);
      }
      return;
    }
    if (
      offset < this.#implemented.length &&
      !this.#implemented.subarray(offset, offset + size).every((b) => b)
    ) {
      // Passed on all the same, as QEMU does: the kernel drops what no register takes.
      this.#reporter.report({
        bdf: this.bdf,
        reason: 'config-unimplemented',
        isWrite: true,
        where: 'config',
        offset,
        size,
      });
    }
    this.#configWriteIn(offset, size, value);
  }

  #configWriteIn(offset: number, size: 1 | 2 | 4, value: number): void {
    // A write the kernel refuses is reported; the emulated bits still follow the guest, as in QEMU.
    this.#fdWrite(VFIO_PCI_CONFIG_REGION_INDEX, 'config', offset, size, value);
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
        Number(this.#fdRead(VFIO_PCI_CONFIG_REGION_INDEX, 'config', pm.offset + PCI_PM_CTRL, 2)) & 3;
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
    if (this.msix && overlaps(offset, end, this.msix.capOffset + PCI_MSIX_FLAGS, 2)) {
      const ctrl = this.#emu.valueAt(this.msix.capOffset + PCI_MSIX_FLAGS, 2);
      this.msix.setControl((ctrl & PCI_MSIX_FLAGS_ENABLE) !== 0, (ctrl & PCI_MSIX_FLAGS_MASKALL) !== 0);
    }
    this.irq.configWritten(offset, size);
  }

  #checkConfig(offset: number, size: number): void {
    if (size !== 1 && size !== 2 && size !== 4) {
      throw new ArgRangeError(`${this.bdf}: config access size ${size} is not 1, 2 or 4`);
    }
    checkInteger(offset, `${this.bdf} config offset`);
  }

  #phys(offset: number, size: 1 | 2 | 4): number {
    return Number(this.device.read(VFIO_PCI_CONFIG_REGION_INDEX, offset, size));
  }

  // ---- setup ---------------------------------------------------------------------------------

  #tag(
    bar: number,
    role: PciRegionRole,
    barOffset: number,
    minAccess: AccessSize,
    maxAccess: AccessSize,
  ): PciRegionTag {
    return { owner: 'vfio-pci', bdf: this.bdf, bar, role, minAccess, maxAccess, barOffset };
  }

  #mmapAreas(info: RegionInfo): MmapArea[] {
    const sparse = info.caps.find((c) => c.kind === 'sparse-mmap');
    const list = sparse && sparse.kind === 'sparse-mmap' ? sparse.areas : [{ offset: 0, size: info.size }];
    const out: MmapArea[] = [];
    for (const a of list) {
      if (a.size === 0) continue;
      if (a.offset < 0 || a.offset + a.size > info.size) {
        throw new ArgRangeError(
          `${this.bdf} BAR ${info.index}: sparse mmap area ${hex(a.offset)}+${hex(a.size)} exceeds the region (${hex(info.size)} bytes)`,
        );
      }
      out.push({ offset: a.offset, size: a.size });
    }
    return out;
  }

  /** Finds MSI-X, trims the table's page out of the mmaps when the kernel requires it, and relocates. */
  #msixEarlySetup(
    infos: RegionInfo[],
    areas: MmapArea[][],
    relo: MsixRelocation,
  ): { layout: MsixLayout; relocated: boolean } | null {
    const cap = this.capabilities.find((c) => !c.extended && c.id === PCI_CAP_ID_MSIX);
    if (!cap) return null;
    const ctrl = this.#phys(cap.offset + PCI_MSIX_FLAGS, 2);
    const table = this.#phys(cap.offset + PCI_MSIX_TABLE, 4) >>> 0;
    const pba = this.#phys(cap.offset + PCI_MSIX_PBA, 4) >>> 0;
    const l = {
      capOffset: cap.offset,
      entries: (ctrl & PCI_MSIX_FLAGS_QSIZE) + 1,
      tableBar: table & PCI_MSIX_FLAGS_BIRMASK,
      tableOffset: table & ~PCI_MSIX_FLAGS_BIRMASK,
      pbaBar: pba & PCI_MSIX_FLAGS_BIRMASK,
      pbaOffset: pba & ~PCI_MSIX_FLAGS_BIRMASK,
    };
    const tableInfo = this.#bars[l.tableBar];
    const pbaInfo = this.#bars[l.pbaBar];
    if (
      l.tableBar >= PCI_NUM_BARS ||
      !tableInfo ||
      l.tableOffset + l.entries * PCI_MSIX_ENTRY_SIZE > tableInfo.regionSize
    ) {
      throw new ArgRangeError(
        `${this.bdf}: MSI-X table (BAR ${l.tableBar} offset ${hex(l.tableOffset)}, ${l.entries} entries) lies outside the device's BARs`,
      );
    }
    if ((l.pbaBar >= PCI_NUM_BARS || !pbaInfo || l.pbaOffset >= pbaInfo.regionSize) && relo === 'off') {
      throw new ArgRangeError(
        `${this.bdf}: MSI-X PBA (BAR ${l.pbaBar} offset ${hex(l.pbaOffset)}) lies outside the device's BARs`,
      );
    }
    if (!infos[l.tableBar].caps.some((c) => c.kind === 'msix-mappable')) {
      this.#trimMsixPage(areas[l.tableBar], l.tableOffset, l.entries, tableInfo.regionSize);
    }
    if (relo === 'off') return { layout: l, relocated: false };
    return { layout: this.#relocateMsix(l, relo), relocated: true };
  }

  /** Leaves the host pages holding the MSI-X table out of a whole-BAR mmap (QEMU's fixup). */
  #trimMsixPage(areas: MmapArea[], tableOffset: number, entries: number, size: number): void {
    if (areas.length !== 1 || areas[0].offset !== 0 || areas[0].size !== size) return;
    const page = this.bus.pageSize;
    const start = Math.floor(tableOffset / page) * page;
    const end = Math.ceil((tableOffset + entries * PCI_MSIX_ENTRY_SIZE) / page) * page;
    if (start === 0) {
      if (end >= size) areas.length = 0;
      else areas[0] = { offset: end, size: size - end };
    } else if (end >= size) {
      areas[0] = { offset: 0, size: start };
    } else {
      areas[0] = { offset: 0, size: start };
      areas.push({ offset: end, size: size - end });
    }
  }

  #relocateMsix(l: MsixLayout, relo: MsixRelocation): MsixLayout {
    if (relo === 'auto') {
      // QEMU has no table of devices known to work with a given BAR, so 'auto' relocates nothing.
      throw new VfioError({
        message: `${this.bdf}: no automatic MSI-X relocation available for device ${hex(this.vendorId)}:${hex(this.deviceId)}`,
        code: 'ENORELOCATION',
        op: 'VfioPciDevice.open',
        bdf: this.bdf,
        hint: "name the BAR to move the MSI-X table to (msixRelocation: 'bar0' ... 'bar5'), or leave it 'off'",
      });
    }
    if (!/^bar[0-5]$/.test(relo))
      throw new ArgRangeError(`${this.bdf}: invalid MSI-X relocation ${String(relo)}`);
    const target = Number(relo.slice(3));
    const tableBytes = l.entries * PCI_MSIX_ENTRY_SIZE;
    const page = this.bus.pageSize;
    let msixSize = tableBytes + Math.ceil(l.entries / 64) * 8;
    msixSize = Math.ceil(msixSize / page) * page;
    msixSize = 2 ** Math.ceil(Math.log2(msixSize));
    const bar = this.#bars[target];
    const prev = target > 0 ? this.#bars[target - 1] : null;
    if (bar?.type === 'io')
      throw new ArgRangeError(`${this.bdf}: invalid MSI-X relocation BAR ${target}, I/O port BAR`);
    if (!bar && prev?.type === 'mem64') {
      throw new ArgRangeError(
        `${this.bdf}: invalid MSI-X relocation BAR ${target}, consumed by 64-bit BAR ${target - 1}`,
      );
    }
    if (bar && bar.size > 2 ** 30 && bar.type !== 'mem64') {
      throw new ArgRangeError(
        `${this.bdf}: invalid MSI-X relocation BAR ${target}, no space to extend 32-bit BAR`,
      );
    }
    let tableOffset: number;
    if (!bar) {
      // A new BAR: 64-bit when the next slot is free, prefetchable since the emulation has no read side effects.
      const mem64 = target < PCI_NUM_BARS - 1 && !this.#bars[target + 1];
      const typeBits = (mem64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) | PCI_BASE_ADDRESS_MEM_PREFETCH;
      this.#bars[target] = new BarState(target, mem64 ? 'mem64' : 'mem32', true, msixSize, 0, typeBits);
      tableOffset = 0;
    } else {
      bar.size = Math.max(bar.size * 2, msixSize * 2);
      // Half-way into a power-of-two BAR at least twice the MSI-X size is always its own page.
      tableOffset = bar.size / 2;
    }
    return { ...l, tableBar: target, pbaBar: target, tableOffset, pbaOffset: tableOffset + tableBytes };
  }

  /**
   * One pread on region `index` for a guest access. A VFIO failure (e.g. EIO while the guest keeps
   * the device in D3hot) reads as all-ones and is reported, as QEMU's vfio_region_read does; any
   * other error is a bug and propagates.
   */
  #fdRead(index: number, where: string, offset: number, size: AccessSize): number | bigint {
    try {
      return this.device.read(index, offset, size);
    } catch (e) {
      if (!isVfioError(e)) throw e;
      this.#reporter.report({
        bdf: this.bdf,
        reason: 'fd-error',
        isWrite: false,
        where,
        offset,
        size,
        error: e,
      });
      return size === 8 ? 0xffff_ffff_ffff_ffffn : 2 ** (size * 8) - 1;
    }
  }

  /** One pwrite on region `index` for a guest access; a VFIO failure drops the write and is reported. */
  #fdWrite(index: number, where: string, offset: number, size: AccessSize, value: number | bigint): void {
    try {
      this.device.write(index, offset, size, value);
    } catch (e) {
      if (!isVfioError(e)) throw e;
      this.#reporter.report({
        bdf: this.bdf,
        reason: 'fd-error',
        isWrite: true,
        where,
        offset,
        size,
        error: e,
      });
    }
  }

  #fdOps(index: number): MemoryRegionOps {
    const where = `${this.bdf} BAR ${index}`;
    const access = { minAccessSize: 1 as AccessSize, maxAccessSize: 8 as AccessSize, unaligned: false };
    return {
      read: (o, s) => this.#fdRead(index, where, o, s),
      write: (o, s, v) => this.#fdWrite(index, where, o, s, v),
      valid: access,
      impl: access,
    };
  }

  #registerBar(bar: BarState, areas: MmapArea[]): void {
    const i = bar.index;
    const baseName = `${this.bdf} base BAR ${i}`;
    bar.base = baseBarRegion(baseName, bar.size, (offset, size, isWrite) =>
      this.#reporter.report({ bdf: this.bdf, reason: 'unbacked', isWrite, where: baseName, offset, size }),
    );
    bar.base.tag = this.#tag(i, 'base', 0, 1, 8);
    if (bar.regionSize === 0) return;
    const region = MemoryRegion.io(`${this.bdf} BAR ${i}`, bar.regionSize, this.#fdOps(i));
    region.tag = this.#tag(i, 'bar', 0, 1, 8);
    bar.region = region;
    bar.base.addSubregion(region, 0, 0);
    const page = this.bus.pageSize;
    const mmaps: BarMmap[] = [];
    try {
      for (const [j, a] of areas.entries()) {
        // A whole-BAR mmap of a sub-page BAR covers the full page so the BAR can later be expanded.
        const wantPage = areas.length === 1 && a.offset === 0 && a.size === bar.regionSize && a.size < page;
        const memory = wantPage ? this.#mapPage(i, a.size) : this.device.map(i, a.offset, a.size);
        const mr = MemoryRegion.ramDevice(`${this.bdf} BAR ${i} mmaps[${j}]`, a.size, memory);
        mr.tag = this.#tag(i, 'mmap', a.offset, 1, 8);
        mmaps.push({ index: j, offset: a.offset, size: a.size, region: mr, memory });
      }
    } catch (e) {
      // As QEMU does, a failed mmap leaves the whole BAR on the fd path; the error stays visible.
      for (const m of mmaps) m.memory.close();
      bar.mmapError = e instanceof Error ? e : new Error(String(e));
      return;
    }
    for (const m of mmaps) region.addSubregion(m.region, m.offset, 0);
    bar.mmaps = mmaps;
    bar.expandable = mmaps.length === 1 && bar.regionSize < page && mmaps[0].memory.length >= page;
  }

  /**
   * Maps a whole page for a sub-page BAR: the kernel reserves the rest of the page when it allows
   * mmap of such a BAR. When the page cannot be mapped (the backend refuses the length, or the kernel
   * refuses the mmap), the BAR is mapped at its size and simply never expands (`PciBar.expandable`).
   */
  #mapPage(index: number, size: number): ReturnType<VfioDeviceLike['map']> {
    try {
      return this.device.map(index, 0, this.bus.pageSize);
    } catch (e) {
      if (!(e instanceof RangeError || (e instanceof Error && 'code' in e))) throw e;
      return this.device.map(index, 0, size);
    }
  }

  #msixSetup(l: MsixLayout, relocated: boolean): Msix {
    const msix = new Msix(l, relocated, this.bdf);
    const tableBar = this.#bars[l.tableBar];
    const pbaBar = this.#bars[l.pbaBar];
    if (!tableBar || !pbaBar) {
      throw new VfioError({
        message: `${this.bdf}: the MSI-X table or PBA BAR is not implemented`,
        code: 'EPROTO',
        op: 'VfioPciDevice.open',
        bdf: this.bdf,
      });
    }
    tableBar.base.addSubregion(msix.tableRegion, l.tableOffset, MSIX_PRIORITY);
    pbaBar.base.addSubregion(msix.pbaRegion, l.pbaOffset, MSIX_PRIORITY);
    const ctl = l.capOffset + PCI_MSIX_FLAGS;
    this.#emu.emulate(
      ctl,
      2,
      0n,
      BigInt(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL),
      BigInt(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL),
    );
    if (relocated) {
      this.#emu.emulate(
        l.capOffset + PCI_MSIX_TABLE,
        4,
        BigInt(l.tableOffset | l.tableBar),
        0xffff_ffffn,
        0n,
      );
      this.#emu.emulate(l.capOffset + PCI_MSIX_PBA, 4, BigInt(l.pbaOffset | l.pbaBar), 0xffff_ffffn, 0n);
    }
    return msix;
  }

  #installQuirks(quirks: readonly QuirkDefinition[]): void {
    const ids = { vendorId: this.vendorId, deviceId: this.deviceId };
    for (const bar of this.#bars) {
      if (!bar?.region) continue;
      const region = bar.region;
      for (const q of quirks) {
        if (!quirkMatches(q, ids, bar.index)) continue;
        const ctx: QuirkContext = {
          bdf: this.bdf,
          bar: bar.index,
          ids,
          readBar: (o, s) => this.#fdRead(bar.index, region.name, o, s),
          writeBar: (o, s, v) => this.#fdWrite(bar.index, region.name, o, s, v),
          msix: this.msix,
          report: (e) => this.#reporter.report({ bdf: this.bdf, ...e }),
        };
        const skipped: string[] = [];
        for (const ov of q.overlays(ctx)) {
          if (
            !Number.isSafeInteger(ov.offset) ||
            !Number.isSafeInteger(ov.size) ||
            ov.offset < 0 ||
            ov.size <= 0
          ) {
            throw new ArgRangeError(
              `${this.bdf} BAR ${bar.index}: quirk overlay ${ov.name} at ${String(ov.offset)}+${String(ov.size)} needs an integer offset >= 0 and size > 0`,
            );
          }
          if (ov.offset + ov.size > bar.regionSize) {
            // QEMU installs quirks without checking the BAR's size; a device presented under
            // another's IDs can have a BAR too small for them. Skip the overlay, keep the device.
            skipped.push(`${ov.name} at ${hex(ov.offset)}+${hex(ov.size)}`);
            continue;
          }
          const mr = MemoryRegion.io(ov.name, ov.size, ov.ops);
          mr.tag = this.#tag(
            bar.index,
            'quirk',
            ov.offset,
            ov.ops.valid?.minAccessSize ?? 1,
            ov.ops.valid?.maxAccessSize ?? 4,
          );
          region.addSubregion(mr, ov.offset, ov.priority ?? 1);
          bar.quirks.push(ov.name);
        }
        if (skipped.length > 0) {
          this.#reporter.notice(
            `${this.bdf} BAR ${bar.index}: quirk ${q.name} skipped overlays past the end of the BAR (${hex(bar.regionSize)} bytes): ${skipped.join(', ')}`,
          );
        }
      }
    }
  }

  #setupRom(): void {
    let info: RegionInfo;
    try {
      info = this.device.regionInfo(VFIO_PCI_ROM_REGION_INDEX);
    } catch (e) {
      // Devices without a ROM region may refuse the query outright; anything else is a real failure.
      if (e instanceof Error && 'code' in e && (e as { code: unknown }).code === 'EINVAL') return;
      throw e;
    }
    if (info.size === 0) return;
    const rom = new BarState(ROM_SLOT, 'mem32', false, info.size, info.size, 0);
    const access = { minAccessSize: 1 as AccessSize, maxAccessSize: 4 as AccessSize, unaligned: false };
    const name = `vfio[${this.bdf}].rom`;
    rom.base = MemoryRegion.io(name, info.size, {
      read: (o, s) => this.#fdRead(VFIO_PCI_ROM_REGION_INDEX, name, o, s),
      // The ROM is read-only: writes are dropped, as a real ROM drops them.
      write: () => undefined,
      valid: access,
      impl: access,
    });
    rom.base.tag = this.#tag(ROM_SLOT, 'rom', 0, 1, 4);
    this.#rom = rom;
  }

  #emulateBarRegisters(): void {
    // Every BAR register is emulated: the guest's addresses never reach the device.
    this.#emu.emulate(PCI_BASE_ADDRESS_0, 24, 0n, (1n << 192n) - 1n, 0n);
    for (const bar of this.#bars) {
      if (!bar) continue;
      const off = PCI_BASE_ADDRESS_0 + 4 * bar.index;
      const mask = ~(BigInt(bar.size) - 1n);
      if (bar.type === 'mem64') {
        this.#emu.emulate(off, 8, BigInt(bar.typeBits), (1n << 64n) - 1n, mask & ((1n << 64n) - 1n));
      } else {
        this.#emu.emulate(off, 4, BigInt(bar.typeBits), 0xffff_ffffn, mask & 0xffff_ffffn);
      }
    }
    const romMask = this.#rom ? (~(BigInt(this.#rom.size) - 1n) & 0xffff_ffffn) | 1n : 0n;
    this.#emu.emulate(PCI_ROM_ADDRESS, 4, 0n, 0xffff_ffffn, romMask);
  }

  // ---- mapping -------------------------------------------------------------------------------

  /** Places every BAR where its register and the command register say, in one transaction. */
  #updateMappings(): void {
    transaction(() => {
      const all = [...this.#bars, this.#rom];
      for (const bar of all) {
        if (!bar) continue;
        const rom = bar.index === ROM_SLOT;
        const space = bar.type === 'io' ? this.bus.io : this.bus.memory;
        const reg = rom ? PCI_ROM_ADDRESS : PCI_BASE_ADDRESS_0 + 4 * bar.index;
        const addr = barAddress({
          type: bar.type,
          rom,
          size: bar.size,
          lo: this.#emu.long(reg),
          hi: bar.type === 'mem64' ? this.#emu.long(reg + 4) : 0,
          command: this.#powerState === 0 ? this.#command : 0,
          limit: space.root.size,
        });
        if (addr === bar.address) continue;
        if (bar.address !== null) space.root.removeSubregion(bar.base);
        bar.address = addr;
        if (addr !== null) space.root.addSubregion(bar.base, addr, BAR_PRIORITY);
        if (bar.regionSize > 0 && bar.regionSize < this.bus.pageSize && !rom) this.#subPageUpdate(bar);
      }
    });
  }

  /**
   * A sub-page BAR at a page-aligned address is expanded to the page so KVM can map it; the
   * container drops to priority 0 so it cannot hide another BAR sharing the page. Anywhere else the
   * real size comes back.
   */
  #subPageUpdate(bar: BarState): void {
    const page = this.bus.pageSize;
    const m = bar.mmaps;
    if (m.length !== 1 || m[0].offset !== 0 || m[0].size !== bar.regionSize || bar.size !== bar.regionSize)
      return;
    if (!bar.expandable || !bar.region) return;
    const size = bar.address !== null && bar.address % page === 0 ? page : bar.regionSize;
    bar.base.setSize(size);
    bar.region.setSize(size);
    m[0].region.setSize(size);
    bar.expanded = size !== bar.regionSize;
    if (bar.address === null) return;
    const prio = bar.expanded ? SUBPAGE_PRIORITY : BAR_PRIORITY;
    if (bar.base.priority !== prio) {
      const root = this.bus.memory.root;
      root.removeSubregion(bar.base);
      root.addSubregion(bar.base, bar.address, prio);
    }
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
    checkInteger(bar, 'BAR index', ROM_SLOT);
    const b = bar === ROM_SLOT ? this.#rom : this.#bars[bar];
    if (!b) throw new ArgRangeError(`${this.bdf}: BAR ${bar} is not implemented`);
    if (b.address === null)
      throw new ArgRangeError(`${this.bdf}: BAR ${bar} is not mapped (no address, or decode disabled)`);
    checkInteger(offset, `${this.bdf} BAR ${bar} dump offset`);
    checkInteger(length, `${this.bdf} BAR ${bar} dump length`);
    if (length === 0 || offset + length > b.base.size) {
      throw new ArgRangeError(
        `${this.bdf}: dump of ${length} bytes at ${hex(offset)} is outside BAR ${bar} (${hex(b.base.size)} bytes)`,
      );
    }
    const space = b.type === 'io' ? this.bus.io : this.bus.memory;
    const start = b.address + offset;
    const end = start + length;
    let minOk: AccessSize = 1;
    let maxOk: AccessSize = 8;
    for (const r of space.flatView.ranges) {
      if (r.addr + r.size <= start || r.addr >= end) continue;
      const tag = r.region.tag;
      if (!isPciRegionTag(tag)) continue;
      if (tag.minAccess > minOk) minOk = tag.minAccess;
      if (tag.maxAccess < maxOk) maxOk = tag.maxAccess;
    }
    let width: AccessSize;
    if (opts.width !== undefined) {
      checkAccessSize(opts.width, `${this.bdf} dump width`);
      width = opts.width;
      if (width > maxOk || width < minOk) {
        throw new ArgRangeError(
          `${this.bdf}: dump width ${width} is outside what the regions accept (${minOk} to ${maxOk} bytes)`,
        );
      }
    } else {
      width = maxOk;
      while (width > minOk && (start % width !== 0 || length % width !== 0))
        width = (width / 2) as AccessSize;
    }
    if (start % width !== 0 || length % width !== 0) {
      throw new ArgRangeError(
        `${this.bdf}: dump of ${length} bytes at ${hex(offset)} is not a whole number of aligned ${width}-byte accesses`,
      );
    }
    const values: (number | bigint)[] = [];
    for (let a = start; a < end; a += width) values.push(space.read(a, width));
    return formatDump(start, width, values);
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
      physWrite: (o, s, v) => this.#fdWrite(VFIO_PCI_CONFIG_REGION_INDEX, 'config', o, s, v),
      phys: (o, s) => this.#phys(o, s),
      restoreEmulated: () => this.#emu.value.set(this.#emuAtOpen),
    };
  }

  /** Removes the BARs from the bus and closes every mapping. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#teardown();
    const release = this.#release;
    this.#release = null;
    release?.();
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
      if (this.#release !== null && typeof d.closeAsync === 'function') await d.closeAsync();
    } finally {
      const release = this.#release;
      this.#release = null;
      release?.();
    }
  }

  /** What close() undoes before the VFIO objects go: interrupts, the BARs' regions and mmaps. */
  #teardown(): void {
    this.#closed = true;
    this.#removeCloser();
    this.irq.close();
    transaction(() => {
      for (const bar of [...this.#bars, this.#rom]) {
        if (!bar || bar.address === null) continue;
        (bar.type === 'io' ? this.bus.io : this.bus.memory).root.removeSubregion(bar.base);
        bar.address = null;
      }
    });
    for (const bar of this.#bars) for (const m of bar?.mmaps ?? []) m.memory.close();
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
    if (this.#closed) throw closedError('VfioPciDevice', `${this.bdf}: the VfioPciDevice`, this.bdf);
  }
}

function overlaps(start: number, end: number, regStart: number, regSize: number): boolean {
  return start < regStart + regSize && regStart < end;
}
