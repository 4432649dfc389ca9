/**
 * Opening one device through VFIO for a command: its own container, its group attached with the
 * best IOMMU type, and the device fd, all closed together.
 */
import { Container } from '../vfio/container';
import type { Device } from '../vfio/device';
import { Group } from '../vfio/group';
import type { SysfsOptions } from '../vfio/sysfs';
import { isMdevUuid } from '../vfio/mdev/sysfs';

export interface OpenedDevice extends Disposable {
  readonly device: Device;
  readonly group: Group;
}

/** Open `bdf` (a PCI address, or a mediated device's UUID) through VFIO. The caller disposes the result (`using`). */
export function openVfioDevice(bdf: string, sysfs: SysfsOptions = {}): OpenedDevice {
  const undo: (() => void)[] = [];
  const close = (): void => {
    for (const fn of undo.splice(0).reverse()) fn();
  };
  try {
    const container = Container.open();
    undo.push(() => container.close());
    const group = isMdevUuid(bdf) ? Group.openByMdev(bdf, sysfs) : Group.openByBdf(bdf, sysfs);
    undo.push(() => group.close());
    group.setContainer(container);
    container.setIommu();
    const device = group.openDevice(bdf);
    undo.push(() => device.close());
    return { device, group, [Symbol.dispose]: close };
  } catch (e) {
    close();
    throw e;
  }
}
