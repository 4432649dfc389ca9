import { PciBus, VfioPciDevice, type VfioPciDeviceOptions } from '../../../lib/pci';
import { Container, Group } from '../../../lib/vfio';

/** Lab device roles, as scripts/lab names them. */
export type LabRole = 'edu' | 'rtl8139' | 'e1000e' | 'ivshmem';

const devices = new Map<string, string>();
for (const item of (process.env.VFIO_BRIDGE_HIL_DEVICES ?? '').split(',')) {
  const [role, bdf] = item.split('=');
  if (role && bdf) devices.set(role, bdf);
}

/** Why the hardware tests are skipped, or null when the lab provides the devices. */
export const skipReason: string | null =
  devices.size > 0
    ? null
    : 'VFIO_BRIDGE_HIL_DEVICES is not set: run through scripts/lab/hil.sh (the lab guest)';

/** `describe` when the lab is there; otherwise a skipped block that names the reason (and fails in CI). */
export function describeLab(name: string, fn: () => void): void {
  if (skipReason === null) {
    describe(name, fn);
    return;
  }
  if (process.env.CI === 'true' || process.env.CI === '1') {
    describe(name, () => {
      it('needs the lab', () => {
        throw new Error(`hardware tests cannot be skipped in CI: ${skipReason}`);
      });
    });
    return;
  }
  describe.skip(`${name} (skipped: ${skipReason})`, fn);
}

/** The BDF of a lab device. */
export function bdfOf(role: LabRole): string {
  const bdf = devices.get(role);
  if (!bdf) throw new Error(`the lab did not provide a ${role} device (VFIO_BRIDGE_HIL_DEVICES)`);
  return bdf;
}

/** A lab device opened through VFIO and built into a VfioPciDevice on a fresh bus. */
export interface LabDevice {
  bus: PciBus;
  dev: VfioPciDevice;
  vfio: ReturnType<Group['openDevice']>;
  close(): void;
}

/** Opens the lab device `role` in its own container and builds its region stacks. */
export function openLab(role: LabRole, opts: VfioPciDeviceOptions = {}): LabDevice {
  const bdf = bdfOf(role);
  const container = Container.open();
  const group = Group.openByBdf(bdf);
  group.setContainer(container);
  container.setIommu();
  const vfio = group.openDevice(bdf);
  const bus = new PciBus();
  const dev = VfioPciDevice.open(bus, vfio, opts);
  return {
    bus,
    dev,
    vfio,
    close() {
      bus.close();
      vfio.close();
      group.close();
      container.close();
    },
  };
}

/** Programs BAR `bar` at `addr` through config space. */
export function placeBar(dev: VfioPciDevice, bar: number, addr: number): void {
  const b = dev.bars[bar];
  const lo = addr % 2 ** 32;
  dev.configWrite(0x10 + 4 * bar, 4, b?.type === 'io' ? lo | 1 : lo);
  if (b?.type === 'mem64') dev.configWrite(0x14 + 4 * bar, 4, Math.floor(addr / 2 ** 32));
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
