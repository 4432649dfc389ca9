/**
 * Building a VfioPciDevice in steps: configuration space read and the device put in its reset
 * state, the BARs found and MSI-X planned, each BAR's region stack, MSI-X, the quirks, the ROM. The
 * steps are a generator, as reset.ts's are: VfioPciDevice.open runs them at once, openAsync gives
 * the event loop a turn after each, and both build the same device from the same accesses.
 */
import { ArgRangeError, ArgTypeError, closedError } from '../base/error';
import { emulateBarRegisters } from './bar-map';
import type { SystemAddressSpaces } from './system-address-spaces';
import { EmulatedConfig, type PciCapability, walkCapabilities } from './config';
import { implementedConfigBytes } from './config-map';
import { PCI_COMMAND, PCI_DEVICE_ID, PCI_VENDOR_ID } from './constants';
import { VFIO_PCI_CONFIG_REGION_INDEX } from '../vfio/uapi';
import type { Msix } from './msix';
import { installMsix, type MsixRelocation, planMsix } from './msix-setup';
import { checkUndriven, claim } from './owners';
import { installQuirks } from './quirk-install';
import { DEFAULT_QUIRKS, type QuirkDefinition } from './quirks';
import { type BarState, buildBarStack, closeMmaps, findBars, RegionIo } from './region';
import { DeviceReporter, deviceSink, type DeviceReportOptions } from './report';
import { resetCommand } from './reset-state';
import { romBar } from './rom';
import { checkInteger, type VfioDeviceLike } from './types';

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

/**
 * A step of the build, named once done: the IDs and the command register, the capability list,
 * which configuration bytes are implemented; `'bar'` comes once per BAR. @internal
 */
export type BuildStep = 'ids' | 'capabilities' | 'config' | 'bars' | 'bar' | 'msix' | 'quirks' | 'rom';

/** What the steps build, for VfioPciDevice to wire. @internal */
export interface PciDeviceParts {
  /** The device's regions, with the reporter of what the guest's accesses could not do. */
  readonly io: RegionIo;
  readonly configSize: number;
  readonly physicalVendorId: number;
  readonly physicalDeviceId: number;
  /** The IDs the guest sees. */
  readonly vendorId: number;
  readonly deviceId: number;
  /** The command register the guest first sees, on the device too. */
  readonly command: number;
  readonly capabilities: readonly PciCapability[];
  /** Which bytes of the standard configuration space hold a register. */
  readonly implemented: Uint8Array;
  readonly emu: EmulatedConfig;
  readonly bars: (BarState | null)[];
  readonly rom: BarState | null;
  readonly msix: Msix | null;
  /** Undoes the build when the device cannot be wired after all: unmaps, and frees the device. */
  abandon(): void;
}

/**
 * buildDevice: the parts of a VfioPciDevice for `device`, in steps. The device counts as driven
 * from the first step, so that a second open meanwhile is refused; a failed build frees it again
 * and unmaps what it mapped. Nothing is put on the bus. @internal
 */
export function* buildDevice(
  bus: SystemAddressSpaces,
  device: VfioDeviceLike,
  opts: VfioPciDeviceOptions,
): Generator<BuildStep, PciDeviceParts> {
  if (typeof device !== 'object' || device === null || typeof device.regionInfo !== 'function') {
    throw new ArgTypeError('VfioPciDevice.open needs a VFIO device (bdf, regionInfo, read, write, map)');
  }
  if (bus.closed) throw closedError('VfioPciDevice.open', 'the SystemAddressSpaces');
  checkUndriven(device, bus);
  const building = { bdf: device.bdf, bus, closed: false };
  claim(device, building);
  let bars: (BarState | null)[] = [];
  const abandon = (): void => {
    building.closed = true;
    closeMmaps(bars);
  };
  try {
    const io = new RegionIo(device.bdf, device, new DeviceReporter(deviceSink(opts, bus)));
    const config = yield* readConfig(io, opts);
    yield 'config';
    // Discover the BARs and their mmap areas, then let MSI-X trim or relocate before anything is built.
    const found = findBars(io, opts.noMmap === true);
    bars = found.bars;
    const msixPlan = planMsix(
      { ...config, bdf: io.bdf, pageSize: bus.pageSize, bars, phys: (o, s) => io.phys(o, s) },
      found.infos,
      found.areas,
      opts.msixRelocation ?? 'off',
    );
    yield 'bars';
    for (const bar of bars) {
      if (!bar) continue;
      buildBarStack(io, bar, found.areas[bar.index], bus.pageSize);
      yield 'bar';
    }
    const msix = msixPlan ? installMsix(io.bdf, bars, config.emu, msixPlan) : null;
    yield 'msix';
    const ids = { vendorId: config.vendorId, deviceId: config.deviceId };
    installQuirks(io, ids, bars, msix, opts.quirks ?? DEFAULT_QUIRKS);
    yield 'quirks';
    const rom = romBar(io);
    emulateBarRegisters(config.emu, bars, rom);
    yield 'rom';
    return { ...config, io, bars, rom, msix, abandon };
  } catch (e) {
    abandon();
    throw e;
  }
}

type ConfigParts = Omit<PciDeviceParts, 'io' | 'bars' | 'rom' | 'msix' | 'abandon'>;

/**
 * The header and capabilities, the IDs overridden, and the device put in its reset state, in
 * three steps: each is a few dozen reads of configuration space through the device fd.
 */
function* readConfig(io: RegionIo, opts: VfioPciDeviceOptions): Generator<BuildStep, ConfigParts> {
  const cfg = io.device.regionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
  if (cfg.size < 0x40) throw new ArgRangeError(`${io.bdf}: config region of ${cfg.size} bytes is too small`);
  const configSize = Math.min(cfg.size, 4096);
  const emu = new EmulatedConfig(configSize);
  const phys = (o: number, s: 1 | 2 | 4): number => io.phys(o, s);
  const physicalVendorId = phys(PCI_VENDOR_ID, 2);
  const physicalDeviceId = phys(PCI_DEVICE_ID, 2);
  if (opts.vendorId !== undefined) checkInteger(opts.vendorId, 'vendorId override', 0xffff);
  if (opts.deviceId !== undefined) checkInteger(opts.deviceId, 'deviceId override', 0xffff);
  const vendorId = opts.vendorId ?? physicalVendorId;
  const deviceId = opts.deviceId ?? physicalDeviceId;
  if (opts.vendorId !== undefined) emu.emulate(PCI_VENDOR_ID, 2, BigInt(vendorId), 0xffffn, 0n);
  if (opts.deviceId !== undefined) emu.emulate(PCI_DEVICE_ID, 2, BigInt(deviceId), 0xffffn, 0n);
  // The guest starts from the reset state, on the device too, as QEMU presents it.
  const command = resetCommand(phys(PCI_COMMAND, 2));
  io.write(VFIO_PCI_CONFIG_REGION_INDEX, 'config', PCI_COMMAND, 2, command);
  yield 'ids';
  const capabilities = walkCapabilities(phys, configSize);
  yield 'capabilities';
  const implemented = implementedConfigBytes(capabilities, phys);
  return {
    configSize,
    emu,
    physicalVendorId,
    physicalDeviceId,
    vendorId,
    deviceId,
    command,
    capabilities,
    implemented,
  };
}
