/**
 * The hardware-in-the-loop suites on both IOMMU backends: `describeBackends` runs a suite once on
 * type1 (container and group) and once on iommufd (device cdev bound to /dev/iommu, attached to an
 * IOAS), and the helpers that open devices take the backend of the run they are in.
 *
 * iommufd needs a kernel with IOMMUFD and VFIO_DEVICE_CDEV; `iommufdMissing` is the one check of
 * that (the lab's own kernel has both, Debian's has neither). Where it is missing, the iommufd runs
 * fail in CI (naming the running kernel and what it lacks) and are skipped, loudly, elsewhere.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

import {
  kernelHasCdevs,
  Container,
  Device,
  Group,
  Ioas,
  Machine,
  openBackend,
  type DmaBackend,
  type MachineOptions,
  type VfioBackendKind,
} from '../../lib';
import { describeDevice, describeNeeding, type Role } from './hil';

export type Backend = VfioBackendKind;
export const BACKENDS: readonly Backend[] = ['type1', 'iommufd'];

/**
 * Why iommufd cannot be tested here (which kernel runs, and what it lacks), or null when it can:
 * /dev/iommu (IOMMUFD) and the vfio-dev character major (VFIO_DEVICE_CDEV).
 */
export function iommufdMissing(): string | null {
  const lacks: string[] = [];
  if (!fs.existsSync('/dev/iommu')) lacks.push('IOMMUFD (no /dev/iommu)');
  if (!kernelHasCdevs()) lacks.push('VFIO_DEVICE_CDEV (no vfio-dev major in /proc/devices)');
  if (lacks.length === 0) return null;
  return (
    `the running kernel ${os.release()} lacks ${lacks.join(' and ')}: iommufd needs the lab's own ` +
    'kernel (scripts/lab/lab.sh --kernel built)'
  );
}

let active: Backend = 'type1';

/** The backend of the describeBackends run a test is in (type1 outside one). */
export function activeBackend(): Backend {
  return active;
}

/** describe() for tests of either backend: the iommufd run needs the kernel ({@link iommufdMissing}). */
export function describeBackend(backend: Backend, name: string, body: () => void): void {
  describeNeeding(backend === 'iommufd' ? iommufdMissing() : null, `${name} on ${backend}`, () => {
    beforeAll(() => {
      active = backend;
    });
    afterAll(() => {
      active = 'type1';
    });
    body();
  });
}

/**
 * describeDevice for `role`, the suite run once per backend: `body` gets the device's address and
 * the backend; helpers here ({@link openOn}, {@link machineOn}) default to the run's backend.
 */
export function describeBackends(
  role: Role,
  name: string,
  body: (bdf: () => string, backend: Backend) => void,
): void {
  describeDevice(role, name, (bdf) => {
    for (const backend of BACKENDS) describeBackend(backend, name, () => body(bdf, backend));
  });
}

/** A device opened as a VMM opens it, on one backend. */
export interface OpenedOn {
  readonly backend: Backend;
  readonly device: Device;
  /** Where its DMA is mapped: the Container or the Ioas. */
  readonly dma: DmaBackend;
  /** type1's group, null on iommufd. */
  readonly group: Group | null;
  readonly container: Container | null;
  readonly ioas: Ioas | null;
  close(): void;
}

/** Open `bdf` on `backend` (default: the run's): container + group + IOMMU, or iommufd + IOAS + cdev. */
export function openOn(bdf: string, backend: Backend = active): OpenedOn {
  const iommu = openBackend(bdf, { backend });
  try {
    const o = iommu.openDevice(bdf);
    return {
      backend,
      device: o.device,
      dma: iommu.dma,
      group: o.group,
      container: iommu.dma instanceof Container ? iommu.dma : null,
      ioas: iommu.dma instanceof Ioas ? iommu.dma : null,
      close() {
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

/** Machine.create on `backend` (default: the run's). */
export function machineOn(opts: MachineOptions, backend: Backend = active): Machine {
  return Machine.create({ ...opts, backend });
}

/** The fds of this process that are VFIO nodes (groups, the container, cdevs) or /dev/iommu. */
export function vfioNodeFds(): string[] {
  return fs.readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      const t = fs.readlinkSync(`/proc/self/fd/${fd}`);
      return t.startsWith('/dev/vfio') || t === '/dev/iommu' ? [t] : [];
    } catch {
      return []; // raced with a close
    }
  });
}
