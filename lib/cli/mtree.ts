/**
 * `mtree BDF...`: the vfio-pci stacks of devices built on one PCI bus, each BAR placed at its
 * host-assigned address (or where `--bar` says), with decode enabled, so `info mtree` shows what a
 * VMM would get and how each range is served.
 */
import { SystemAddressSpaces, type MapInfoRange } from '../pci/system-address-spaces';
import { VfioPciDevice } from '../pci/device';
import type { VfioBackendChoice } from '../vfio/backend';
import { openBackend } from '../vfio/vfio-backend';
import type { SysfsOptions } from '../vfio/sysfs';
import { UsageError } from './errors';
import { IORESOURCE_IO, parseBdf, readResources, type PciResource } from './pci-sysfs';
import { parseOffset } from './region-access';

/** A BAR address from `--bar [BDF/]n=ADDR`. */
export interface BarPlacement {
  bdf: string | null;
  bar: number;
  address: number;
}

/**
 * `--bar [BDF/]n=ADDR`.
 * @throws UsageError
 */
export function parseBarPlacement(arg: string): BarPlacement {
  const m = /^(?:([^/]+)\/)?([0-5])=(.+)$/.exec(arg.trim());
  if (!m)
    throw new UsageError(
      `--bar ${JSON.stringify(arg)} is not [BDF/]n=ADDR`,
      'for example --bar 0=0xfe000000',
    );
  return {
    bdf: m[1] ? parseBdf(m[1]) : null,
    bar: Number(m[2]),
    address: parseOffset(m[3], '--bar address'),
  };
}

export interface MtreeBar {
  index: number;
  type: 'io' | 'mem32' | 'mem64';
  prefetchable: boolean;
  size: number;
  address: number | null;
}

export interface MtreeDevice {
  bdf: string;
  bars: MtreeBar[];
}

/** What `mtree` built: the bus (open until disposed) and the devices on it. */
export interface BuiltBus extends Disposable {
  bus: SystemAddressSpaces;
  devices: MtreeDevice[];
  mapinfo: MapInfoRange[];
}

/** IORESOURCE_MEM_64 in a `resource` line's flags. */
const IORESOURCE_MEM_64 = 0x0010_0000;

/**
 * Check a placement against the BAR as sysfs shows it. A BAR register would take any of these
 * silently (masking the low bits, dropping the high dword of a 32-bit BAR), and a placement for a
 * BAR the device lacks would simply never be used.
 * @throws UsageError
 */
function checkPlacement(bdf: string, p: BarPlacement, resources: readonly PciResource[]): void {
  const bar = resources.find((r) => r.index === p.bar);
  const at = `--bar ${p.bar}=0x${p.address.toString(16)}`;
  if (bar === undefined) {
    const has = resources.filter((r) => r.index < 6).map((r) => r.index);
    throw new UsageError(
      `${at}: ${bdf} has no BAR ${p.bar}`,
      has.length > 0 ? `its BARs are ${has.join(', ')}` : 'it has no BARs',
    );
  }
  if (p.address % bar.size !== 0) {
    throw new UsageError(
      `${at}: BAR ${p.bar} of ${bdf} is 0x${bar.size.toString(16)} bytes, so its address must be a multiple of that`,
    );
  }
  const io = (bar.flags & IORESOURCE_IO) !== 0;
  const limit = io ? 0x1_0000 : (bar.flags & IORESOURCE_MEM_64) !== 0 ? 2 ** 64 : 2 ** 32;
  if (p.address + bar.size > limit) {
    throw new UsageError(
      `${at}: BAR ${p.bar} of ${bdf} is ${io ? 'an I/O BAR' : 'a 32-bit BAR'} and must end at or below 0x${limit.toString(16)}`,
    );
  }
}

/**
 * Open every device on one bus, in one container, and place their BARs.
 * @throws UsageError for a --bar naming a device not listed, or a plain n=ADDR with several devices
 */
export function buildBus(
  bdfs: readonly string[],
  bars: readonly BarPlacement[],
  sysfs: SysfsOptions,
  backend: VfioBackendChoice = 'auto',
): BuiltBus {
  for (const p of bars) {
    if (p.bdf === null && bdfs.length > 1) {
      throw new UsageError(
        `--bar ${p.bar}=… is ambiguous with ${bdfs.length} devices`,
        'write it as --bar BDF/n=ADDR',
      );
    }
    if (p.bdf !== null && !bdfs.includes(p.bdf))
      throw new UsageError(`--bar names ${p.bdf}, which is not listed`);
    const bdf = p.bdf ?? bdfs[0];
    checkPlacement(bdf, p, readResources(bdf, sysfs));
  }
  const bus = new SystemAddressSpaces();
  const iommu = openBackend(bdfs[0], { ...sysfs, backend });
  const close = (): void => {
    bus.close();
    iommu.close();
  };
  try {
    const devices: MtreeDevice[] = [];
    for (const bdf of bdfs) {
      const dev = VfioPciDevice.openByBdf(bus, bdf, { iommu });
      const host = readResources(bdf, sysfs);
      const out: MtreeBar[] = [];
      for (const bar of dev.bars) {
        if (!bar) continue;
        const placed = bars.find((p) => p.bar === bar.index && (p.bdf === null || p.bdf === bdf));
        const addr = placed ? placed.address : (host.find((r) => r.index === bar.index)?.start ?? 0);
        const reg = 0x10 + 4 * bar.index;
        dev.configWrite(reg, 4, ((addr % 2 ** 32) | (bar.type === 'io' ? 1 : 0)) >>> 0);
        if (bar.type === 'mem64') dev.configWrite(reg + 4, 4, Math.floor(addr / 2 ** 32));
        out.push({
          index: bar.index,
          type: bar.type,
          prefetchable: bar.prefetchable,
          size: bar.size,
          address: 0,
        });
      }
      // Decode on, as a guest's firmware leaves it, so the placed BARs appear in the address spaces.
      dev.configWrite(0x04, 2, dev.configRead(0x04, 2) | 0x3);
      for (const b of out) b.address = dev.bars[b.index]?.address ?? null;
      devices.push({ bdf, bars: out });
    }
    return { bus, devices, mapinfo: bus.mapinfo(), [Symbol.dispose]: close };
  } catch (e) {
    close();
    throw e;
  }
}
