/**
 * Which IOMMU backend a command uses for a device, and why, as `info` shows it: the one a device on
 * vfio-pci was opened through, or, for a device on another driver, the one it would get once bound.
 */
import { Option } from 'commander';

import {
  BACKEND_CHOICES,
  chooseBackend,
  type BackendDecision,
  type VfioBackendChoice,
  type VfioBackendKind,
} from '../vfio/backend';
import { kernelHasCdevs } from '../vfio/cdev';
import type { SysfsOptions } from '../vfio/sysfs';

/** `info`'s backend record. */
export interface BackendJson {
  /** The backend: the one used (opened), or the one the device would get; null when none can be had. */
  kind: VfioBackendKind | null;
  requested: VfioBackendChoice;
  /** Why. */
  reason: string;
  /** The device cdev, on iommufd. */
  cdev: string | null;
  /** True when the device was opened through it for this command; false for a prediction. */
  opened: boolean;
}

/** The `--backend` option every command that opens a device through VFIO takes. */
export const backendOption = (): Option =>
  new Option(
    '--backend <backend>',
    'the IOMMU backend: iommufd (/dev/iommu and the device cdev), type1 (the container and group), ' +
      'or auto: iommufd where the kernel offers it and the device has a cdev, else type1',
  )
    .choices([...BACKEND_CHOICES])
    .default('auto');

/** The record of a device opened through `decision`. */
export function openedBackend(decision: BackendDecision): BackendJson {
  return {
    kind: decision.backend,
    requested: decision.requested,
    reason: decision.reason,
    cdev: decision.cdev?.path ?? null,
    opened: true,
  };
}

/**
 * The backend device `bdf`, on another driver now, would get once bound to vfio-pci under
 * `requested` (a device gets its cdev when vfio-pci takes it, on a kernel with VFIO_DEVICE_CDEV).
 */
export function predictedBackend(requested: VfioBackendChoice, sysfs: SysfsOptions): BackendJson {
  const once = 'once on vfio-pci';
  let iommufd: string | null = null;
  try {
    chooseBackend(null, 'iommufd', sysfs);
  } catch (e) {
    iommufd = (e as Error).message;
  }
  if (iommufd === null && !kernelHasCdevs(sysfs)) {
    iommufd = 'the kernel has no VFIO device cdevs (built without VFIO_DEVICE_CDEV)';
  }
  if (requested !== 'type1' && iommufd === null) {
    return {
      kind: 'iommufd',
      requested,
      reason: `${once}: the kernel offers /dev/iommu and device cdevs`,
      cdev: null,
      opened: false,
    };
  }
  if (requested === 'iommufd') {
    return { kind: null, requested, reason: `iommufd cannot be had: ${iommufd}`, cdev: null, opened: false };
  }
  let type1: string | null = null;
  try {
    chooseBackend(null, 'type1', sysfs);
  } catch (e) {
    type1 = (e as Error).message;
  }
  if (type1 !== null)
    return { kind: null, requested, reason: `type1 cannot be had: ${type1}`, cdev: null, opened: false };
  const why = requested === 'type1' ? 'asked for type1' : `auto: iommufd cannot be had (${iommufd})`;
  return { kind: 'type1', requested, reason: `${once}: ${why}`, cdev: null, opened: false };
}

/** One line for the text form of `info`. */
export function formatBackend(j: BackendJson): string {
  const what = j.kind ?? 'none';
  const how = j.opened
    ? j.cdev !== null
      ? `opened through ${j.cdev}`
      : 'opened through its group'
    : 'would be used';
  return `backend: ${what} (${how}; ${j.reason})`;
}
