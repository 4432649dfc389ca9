/**
 * Opening one device through VFIO for a command: an IOMMU context of its own of the backend asked
 * for (iommufd through the device's cdev, or a container with the group attached), and the device
 * fd, all closed together.
 */
import type { Device } from '../vfio/device';
import type { Group } from '../vfio/group';
import type { BackendDecision, VfioBackendChoice } from '../vfio/backend';
import type { SysfsOptions } from '../vfio/sysfs';
import { openBackend } from '../vfio/vfio-backend';

export interface OpenedDevice extends Disposable {
  readonly device: Device;
  /** The group it was opened through (type1), or null (iommufd). */
  readonly group: Group | null;
  /** Its IOMMU group number (-1 when sysfs does not say). */
  readonly groupNumber: number;
  /** Which backend, and why. */
  readonly decision: BackendDecision;
}

/**
 * Open `bdf` (a PCI address, or a mediated device's UUID) through VFIO on `backend` (default auto:
 * iommufd where the kernel and the device's cdev allow it). The caller disposes the result (`using`).
 */
export function openVfioDevice(
  bdf: string,
  sysfs: SysfsOptions = {},
  backend: VfioBackendChoice = 'auto',
): OpenedDevice {
  const iommu = openBackend(bdf, { ...sysfs, backend });
  try {
    const o = iommu.openDevice(bdf);
    return {
      device: o.device,
      group: o.group,
      groupNumber: o.groupNumber,
      decision: iommu.decision!,
      [Symbol.dispose]: () => {
        try {
          o.release();
        } finally {
          iommu.close();
        }
      },
    };
  } catch (e) {
    iommu.close();
    throw e;
  }
}
