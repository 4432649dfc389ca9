/**
 * Which IOMMU backend a device is opened through: iommufd with the device's cdev where the kernel
 * offers both (`/dev/iommu`, and a `vfio-dev` cdev for the device), else the legacy type1
 * container/group uAPI; or the one the caller asks for, with the reason when it cannot be had.
 * Decided from the file system alone (sysfs and the device nodes), before anything is opened.
 */
import * as fs from 'node:fs';

import { ArgRangeError } from '../base/error';
import { VfioError } from '../base/native-errors';
import { findCdev, noCdevError, normalizeDeviceName, type CdevOptions, type DeviceCdev } from './cdev';
import type { VfioBackendKind } from './dma-types';

export type { VfioBackendKind };

/** What a caller asks for: a backend, or `auto` (iommufd where it can be had, else type1). */
export type VfioBackendChoice = 'auto' | VfioBackendKind;

/** The choices, for option parsers and completion. */
export const BACKEND_CHOICES: readonly VfioBackendChoice[] = ['auto', 'iommufd', 'type1'];

/** Where the backends' nodes are looked up (tests point them at a fake tree). */
export interface BackendProbeOptions extends CdevOptions {
  /** The iommufd node (default `/dev/iommu`). */
  iommuPath?: string;
  /** The container node (default `/dev/vfio/vfio`). */
  containerPath?: string;
  /**
   * How a node's read/write access is checked: null when it can be opened, else the errno name
   * (default: access(2) for R_OK | W_OK).
   */
  access?: (path: string) => string | null;
}

/** Why a backend was (or will be) used for a device. */
export interface BackendDecision {
  /** The backend that will be (or was) used: never `auto`. */
  readonly backend: VfioBackendKind;
  /** What was asked for: `auto`, or one backend by name. */
  readonly requested: VfioBackendChoice;
  /** One sentence: why this backend. */
  readonly reason: string;
  /** The device's cdev, when the backend is iommufd and a device was named. */
  readonly cdev: DeviceCdev | null;
  /** When `auto` settled for type1: why iommufd could not be had. */
  readonly iommufdUnavailable: string | null;
}

/** Checks a backend option; `what` names it in the error (`backend`, `--backend`). */
export function checkBackendChoice(v: unknown, what = 'backend'): VfioBackendChoice {
  if (v === undefined) return 'auto';
  if (typeof v !== 'string' || !(BACKEND_CHOICES as readonly string[]).includes(v)) {
    throw new ArgRangeError(`${what} ${JSON.stringify(v)} is not one of ${BACKEND_CHOICES.join(', ')}`);
  }
  return v as VfioBackendChoice;
}

function defaultAccess(p: string): string | null {
  try {
    fs.accessSync(p, fs.constants.R_OK | fs.constants.W_OK);
    return null;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'EIO';
  }
}

/** A backend that cannot be had, as the error to throw when it was asked for. */
type Refusal = VfioError;

/** Whether iommufd can be had (for `bdf`, when given): its cdev, or the error saying why not. */
function probeIommufd(bdf: string | null, opts: BackendProbeOptions): { cdev: DeviceCdev | null } | Refusal {
  const node = opts.iommuPath ?? '/dev/iommu';
  const access = opts.access ?? defaultAccess;
  const op = 'backend iommufd';
  const nodeErr = access(node);
  if (nodeErr === 'ENOENT') {
    return new VfioError({
      message: `no ${node}: the kernel has no IOMMUFD (CONFIG_IOMMUFD), or its module is not loaded`,
      code: 'ENOIOMMUFD',
      op,
      path: node,
      ...(bdf !== null ? { bdf } : {}),
      hint: "modprobe iommufd where it is a module; otherwise use the type1 backend (backend: 'type1')",
    });
  }
  if (nodeErr !== null) return accessError(op, node, nodeErr, bdf, 'the iommufd node');
  if (bdf === null) return { cdev: null };
  const c = findCdev(bdf, opts);
  if ('none' in c) return noCdevError(bdf, c, op);
  const cdevErr = access(c.path);
  if (cdevErr === 'ENOENT') {
    return new VfioError({
      message: `${bdf} has the cdev ${c.name} in sysfs but ${c.path} does not exist`,
      code: 'ENOCDEV',
      op,
      path: c.path,
      bdf,
      hint: 'devtmpfs did not create the node (is /dev a devtmpfs?), or the device is moving between drivers',
    });
  }
  if (cdevErr !== null) return accessError(op, c.path, cdevErr, bdf, `the device's cdev`);
  return { cdev: c };
}

/** Whether type1 can be had: nothing, or the error saying why not. */
function probeType1(bdf: string | null, opts: BackendProbeOptions): null | Refusal {
  const node = opts.containerPath ?? '/dev/vfio/vfio';
  const err = (opts.access ?? defaultAccess)(node);
  if (err === 'ENOENT') {
    return new VfioError({
      message: `no ${node}: the kernel has no VFIO container (VFIO_CONTAINER, or iommufd's VFIO compatibility), or vfio is not loaded`,
      code: 'ENOCONTAINER',
      op: 'backend type1',
      path: node,
      ...(bdf !== null ? { bdf } : {}),
      hint: "modprobe vfio-pci; a kernel with IOMMUFD and VFIO_DEVICE_CDEV has the iommufd backend (backend: 'iommufd')",
    });
  }
  return err === null ? null : accessError('backend type1', node, err, bdf, 'the container node');
}

function accessError(op: string, node: string, code: string, bdf: string | null, what: string): VfioError {
  return new VfioError({
    message: `cannot open ${node} (${what}): ${code}`,
    code,
    op,
    path: node,
    ...(bdf !== null ? { bdf } : {}),
    hint:
      code === 'EACCES' || code === 'EPERM'
        ? `no permission on ${node}: run as root, or give this user read/write access (chown/chmod, or a udev rule)`
        : undefined,
  });
}

/**
 * The backend for device `bdf` (a PCI address or a mediated device's UUID; null for devices not
 * named yet) under `choice`. `auto` takes iommufd when /dev/iommu can be opened and the device has a
 * cdev that can, else type1.
 * @throws VfioError when the backend asked for cannot be had, with the reason: ENOIOMMUFD (no
 * /dev/iommu), ENOCDEV (no cdev: a kernel without VFIO_DEVICE_CDEV, or a device not on vfio-pci),
 * ENOCONTAINER (no /dev/vfio/vfio), EACCES (permissions); ENOBACKEND when `auto` finds neither.
 */
export function chooseBackend(
  bdf: string | null,
  choice: VfioBackendChoice = 'auto',
  opts: BackendProbeOptions = {},
): BackendDecision {
  const requested = checkBackendChoice(choice);
  const dev = bdf === null ? null : normalizeDeviceName(bdf);
  const forWhat = dev === null ? 'devices' : dev;
  if (requested === 'type1') {
    const no = probeType1(dev, opts);
    if (no !== null) throw no;
    return { backend: 'type1', requested, reason: 'asked for type1', cdev: null, iommufdUnavailable: null };
  }
  const iommufd = probeIommufd(dev, opts);
  if (!(iommufd instanceof VfioError)) {
    const cdev = iommufd.cdev;
    const reason =
      `${requested === 'iommufd' ? 'asked for iommufd' : 'auto'}: the kernel offers ${opts.iommuPath ?? '/dev/iommu'}` +
      (cdev !== null ? ` and ${forWhat} has its cdev ${cdev.path}` : '');
    return { backend: 'iommufd', requested, reason, cdev, iommufdUnavailable: null };
  }
  if (requested === 'iommufd') throw iommufd;
  const type1 = probeType1(dev, opts);
  if (type1 !== null) {
    throw new VfioError({
      message: `no VFIO backend for ${forWhat}: iommufd: ${iommufd.message}; type1: ${type1.message}`,
      code: 'ENOBACKEND',
      op: 'backend auto',
      ...(dev !== null ? { bdf: dev } : {}),
      hint: type1.hint ?? iommufd.hint,
    });
  }
  return {
    backend: 'type1',
    requested,
    reason: `auto: iommufd cannot be had (${iommufd.message}), so the container/group uAPI`,
    cdev: null,
    iommufdUnavailable: iommufd.message,
  };
}
