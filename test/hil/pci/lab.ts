import { SystemAddressSpaces, VfioPciDevice, type VfioPciDeviceOptions } from '../../../lib/pci';
import type { Device } from '../../../lib/vfio';
import { activeBackend, describeBackends, openOn } from '../backends';
import type { Role } from '../hil';
import { placeBar } from '../../support/pci-helpers';

export { bdfOf, describeDevice, type Role } from '../hil';
export { placeBar };

/** A lab device opened through VFIO and built into a VfioPciDevice on a fresh bus. */
export interface LabDevice {
  bus: SystemAddressSpaces;
  dev: VfioPciDevice;
  vfio: Device;
  close(): void;
}

/**
 * Opens `bdf` in an IOMMU context of its own, on the backend of the run the test is in (a container
 * with its group, or an iommufd IOAS with its cdev), and builds its region stacks on a new bus.
 */
export function openLab(bdf: string, opts: VfioPciDeviceOptions = {}): LabDevice {
  const opened = openOn(bdf, activeBackend());
  try {
    const bus = new SystemAddressSpaces();
    const dev = VfioPciDevice.open(bus, opened.device, opts);
    return {
      bus,
      dev,
      vfio: opened.device,
      close() {
        bus.close();
        opened.close();
      },
    };
  } catch (e) {
    opened.close();
    throw e;
  }
}

/** describeDevice for PCI-layer tests of `role`, run on each backend (openLab follows the run). */
export function describePci(role: Role, name: string, body: (bdf: () => string) => void): void {
  describeBackends(role, `vfio-pci layer: ${name}`, (bdf) => body(bdf));
}

/**
 * In a describe block: the lab device opened before its tests (its BARs placed at `bars`, BAR
 * index to address, and decode on) and closed after them. The object stands for the device
 * opened for the block, so its tests read `lab.dev`, `lab.bus` and `lab.vfio` as usual.
 */
export function useLab(
  bdfOf: () => string,
  bars: Readonly<Record<number, number>>,
  opts: VfioPciDeviceOptions = {},
): LabDevice {
  let lab: LabDevice | undefined;
  beforeAll(() => {
    lab = openLab(bdfOf(), opts);
    for (const [bar, address] of Object.entries(bars)) placeBar(lab.dev, Number(bar), address);
    enableDecode(lab.dev);
  });
  afterAll(() => lab?.close());
  const open = (): LabDevice => {
    if (lab === undefined) throw new Error('the lab device is open only while its describe block runs');
    return lab;
  };
  return {
    get bus() {
      return open().bus;
    },
    get dev() {
      return open().dev;
    },
    get vfio() {
      return open().vfio;
    },
    close: () => open().close(),
  };
}

/** Enables memory and I/O decode. */
export function enableDecode(dev: VfioPciDevice): void {
  dev.configWrite(0x04, 2, dev.configRead(0x04, 2) | 0x3);
}

/** The mapinfo pieces of one BAR: [offset in BAR, size, region name, mapinfo]. */
export function barRanges(dev: VfioPciDevice, bar: number): [number, number, string, string][] {
  return dev
    .mapinfo()
    .filter((r) => r.bar === bar)
    .map((r) => [r.barOffset, r.size, r.name, r.mapinfo]);
}
