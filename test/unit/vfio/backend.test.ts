// The backend choice (lib/vfio/backend.ts) on fake trees: sysfs with or without the device cdev
// class, device nodes present or not, and an access check that says what the caller may open.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { chooseBackend, checkBackendChoice, type BackendProbeOptions } from '../../../lib/vfio/backend';
import { findCdev } from '../../../lib/vfio/cdev';
import { predictedBackend } from '../../../lib/cli/backend-info';
import type { VfioError } from '../../../lib/vfio';
import { openBackend, openBackendAsync } from '../../../lib/vfio/vfio-backend';

const BDF = '0000:00:03.0';
/** A mediated device (an mtty), on the mdev bus beside the PCI device. */
const UUID = '83b8f4f2-509f-382f-3c1e-e6bfe0fa1001';

interface Host {
  /** The kernel has device cdevs (/sys/class/vfio-dev). */
  cdevs?: boolean;
  /** The device is on this driver (vfio-pci gets it a cdev when the kernel has them). */
  driver?: string | null;
  /** Nodes that exist, and those the caller may not open. */
  nodes?: string[];
  denied?: string[];
  /** The mdev's driver: `mtty` registers it with VFIO (a cdev vfio4 with cdevs), null has none. */
  mdevDriver?: string | null;
}

let root: string;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-backend-'));
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

/** A fake /sys and /dev for `h`, and the probe options that look there. */
function host(h: Host): BackendProbeOptions {
  const base = fs.mkdtempSync(path.join(root, 'host-'));
  const sys = path.join(base, 'sys');
  const dev = path.join(sys, 'bus/pci/devices', BDF);
  fs.mkdirSync(dev, { recursive: true });
  const driver = h.driver === undefined ? 'vfio-pci' : h.driver;
  if (driver !== null) {
    fs.mkdirSync(path.join(sys, 'bus/pci/drivers', driver), { recursive: true });
    fs.symlinkSync(path.join(sys, 'bus/pci/drivers', driver), path.join(dev, 'driver'));
  }
  // Every VFIO device is in the vfio-dev class; with cdevs it has a device number (`dev`), and the
  // kernel lists the vfio-dev major.
  const procDevices = path.join(base, 'proc-devices');
  fs.writeFileSync(procDevices, `Character devices:\n  1 mem\n${h.cdevs !== false ? '237 vfio-dev\n' : ''}`);
  if (driver === 'vfio-pci') {
    fs.mkdirSync(path.join(dev, 'vfio-dev/vfio3'), { recursive: true });
    if (h.cdevs !== false) fs.writeFileSync(path.join(dev, 'vfio-dev/vfio3/dev'), '237:3\n');
  }
  // The mdev bus links each instance to its directory under the parent's device.
  const mdev = path.join(sys, 'devices/virtual/mtty/mtty', UUID);
  fs.mkdirSync(mdev, { recursive: true });
  fs.mkdirSync(path.join(sys, 'bus/mdev/devices'), { recursive: true });
  fs.symlinkSync(mdev, path.join(sys, 'bus/mdev/devices', UUID));
  const mdevDriver = h.mdevDriver === undefined ? 'mtty' : h.mdevDriver;
  if (mdevDriver !== null) {
    fs.mkdirSync(path.join(sys, 'bus/mdev/drivers', mdevDriver), { recursive: true });
    fs.symlinkSync(path.join(sys, 'bus/mdev/drivers', mdevDriver), path.join(mdev, 'driver'));
    fs.mkdirSync(path.join(mdev, 'vfio-dev/vfio4'), { recursive: true });
    if (h.cdevs !== false) fs.writeFileSync(path.join(mdev, 'vfio-dev/vfio4/dev'), '237:4\n');
  }
  const nodes = new Set(h.nodes ?? ['iommu', 'vfio/vfio', 'vfio/devices/vfio3', 'vfio/devices/vfio4']);
  const denied = new Set(h.denied ?? []);
  const devDir = path.join(base, 'dev');
  return {
    sysfsRoot: sys,
    iommuPath: path.join(devDir, 'iommu'),
    containerPath: path.join(devDir, 'vfio/vfio'),
    cdevDir: path.join(devDir, 'vfio/devices'),
    procDevices,
    access: (p) => {
      const rel = path.relative(devDir, p);
      if (!nodes.has(rel)) return 'ENOENT';
      return denied.has(rel) ? 'EACCES' : null;
    },
  };
}

function refused(fn: () => unknown): VfioError {
  try {
    fn();
  } catch (e) {
    return e as VfioError;
  }
  throw new Error('expected a refusal');
}

describe('chooseBackend', () => {
  it('auto takes iommufd when /dev/iommu and the device cdev can both be opened, and says so', () => {
    const o = host({});
    const d = chooseBackend(BDF, 'auto', o);
    expect(d.backend).toBe('iommufd');
    expect(d.cdev).toEqual({ name: 'vfio3', path: path.join(o.cdevDir!, 'vfio3') });
    expect(d.reason).toMatch(/^auto: the kernel offers .*iommu and 0000:00:03.0 has its cdev .*vfio3$/);
    expect(d.iommufdUnavailable).toBeNull();
    expect(chooseBackend(BDF, undefined, o).backend).toBe('iommufd');
  });

  it.each<[string, Host, RegExp]>([
    ['the kernel has no IOMMUFD', { nodes: ['vfio/vfio'] }, /no .*iommu: the kernel has no IOMMUFD/],
    ['the kernel has no device cdevs', { cdevs: false }, /built without VFIO_DEVICE_CDEV/],
    ['/dev/iommu is root-only', { denied: ['iommu'] }, /cannot open .*iommu \(the iommufd node\): EACCES/],
    ['the cdev is not the user’s', { denied: ['vfio/devices/vfio3'] }, /device's cdev\): EACCES/],
    ['the cdev node is missing', { nodes: ['iommu', 'vfio/vfio'] }, /has the cdev vfio3 in sysfs but/],
  ])('auto settles for type1 when %s, and keeps the reason', (_why, h, reason) => {
    const d = chooseBackend(BDF, 'auto', host(h));
    expect(d.backend).toBe('type1');
    expect(d.iommufdUnavailable).toMatch(reason);
    expect(d.reason).toMatch(/^auto: iommufd cannot be had \(/);
  });

  it.each<[string, Host, string, RegExp]>([
    ['no /dev/iommu', { nodes: ['vfio/vfio'] }, 'ENOIOMMUFD', /modprobe iommufd/],
    ['a kernel without VFIO_DEVICE_CDEV', { cdevs: false }, 'ENOCDEV', /CONFIG_VFIO_DEVICE_CDEV=y/],
    ['a device on another driver', { driver: 'e1000e' }, 'ENOCDEV', /vfio-bridge bind 0000:00:03.0/],
    ['permissions on /dev/iommu', { denied: ['iommu'] }, 'EACCES', /no permission on .*iommu/],
  ])('an iommufd override fails with %s', (_why, h, code, hint) => {
    const e = refused(() => chooseBackend(BDF, 'iommufd', host(h)));
    expect([e.name, e.code, e.bdf]).toEqual(['VfioError', code, BDF]);
    expect(e.hint).toMatch(hint);
  });

  it('a type1 override is honoured while iommufd is there, and fails without a container node', () => {
    expect(chooseBackend(BDF, 'type1', host({}))).toMatchObject({
      backend: 'type1',
      reason: 'asked for type1',
    });
    const e = refused(() => chooseBackend(BDF, 'type1', host({ nodes: ['iommu', 'vfio/devices/vfio3'] })));
    expect(e.code).toBe('ENOCONTAINER');
    expect(e.message).toMatch(/VFIO_CONTAINER/);
    expect(refused(() => chooseBackend(BDF, 'type1', host({ denied: ['vfio/vfio'] }))).code).toBe('EACCES');
  });

  it('auto with neither backend names both reasons', () => {
    const e = refused(() => chooseBackend(BDF, 'auto', host({ nodes: [] })));
    expect(e.code).toBe('ENOBACKEND');
    expect(e.message).toMatch(/iommufd: no .*iommu.*; type1: no .*vfio\/vfio/);
  });

  it('without a device (a machine before its first), only the nodes count', () => {
    expect(chooseBackend(null, 'auto', host({ cdevs: false })).backend).toBe('iommufd');
    expect(chooseBackend(null, 'auto', host({ nodes: ['vfio/vfio'] })).backend).toBe('type1');
  });

  it('refuses a choice it does not know, and a bad address', () => {
    expect(() => chooseBackend(BDF, 'vfio' as never, host({}))).toThrow(RangeError);
    expect(() => checkBackendChoice(1, '--backend')).toThrow(
      /--backend 1 is not one of auto, iommufd, type1/,
    );
    expect(checkBackendChoice(undefined)).toBe('auto');
    expect(() => chooseBackend('00:3', 'auto', host({}))).toThrow(RangeError);
  });
});

describe('openBackendAsync', () => {
  it('refuses what openBackend refuses, as a rejection after the probe, never a throw', async () => {
    const o = host({ nodes: ['vfio/vfio'] });
    const sync = refused(() => openBackend(BDF, { ...o, backend: 'iommufd' }));
    let settled = false;
    const p = openBackendAsync(BDF, { ...o, backend: 'iommufd' }).finally(() => (settled = true));
    // The probe ran at the call; its refusal waits for the turn of the event loop.
    expect(settled).toBe(false);
    const e = (await p.catch((err: unknown) => err)) as VfioError;
    expect([e.name, e.code, e.bdf, e.hint]).toEqual([sync.name, 'ENOIOMMUFD', BDF, sync.hint]);
  });
});

describe('findCdev', () => {
  it('names the cdev, or why there is none', () => {
    expect(findCdev(BDF, host({}))).toMatchObject({ name: 'vfio3' });
    expect(findCdev('0000:00:09.0', host({}))).toMatchObject({ none: 'no-device' });
  });

  it('tells a kernel without cdevs from a device off vfio-pci', () => {
    // vfio-pci puts the device in the vfio-dev class either way; without cdevs it has no number.
    expect(findCdev(BDF, host({ cdevs: false }))).toMatchObject({
      none: 'kernel',
      detail: expect.stringMatching(/vfio3 has no device number/),
    });
    expect(findCdev(BDF, host({ cdevs: false, driver: 'e1000e' }))).toMatchObject({
      none: 'kernel',
      detail: expect.stringMatching(/no vfio-dev major/),
    });
    expect(findCdev(BDF, host({ driver: null }))).toMatchObject({
      none: 'driver',
      detail: expect.stringMatching(/on no driver/),
    });
  });
});

describe('chooseBackend for a mediated device', () => {
  it('auto takes iommufd through the cdev under its mdev directory, by UUID in any case', () => {
    const o = host({});
    const d = chooseBackend(UUID.toUpperCase(), 'auto', o);
    expect(d).toMatchObject({
      backend: 'iommufd',
      cdev: { name: 'vfio4', path: path.join(o.cdevDir!, 'vfio4') },
    });
    expect(d.reason).toBe(`auto: the kernel offers ${o.iommuPath} and ${UUID} has its cdev ${d.cdev!.path}`);
  });

  it('auto settles for type1 without cdevs or with the cdev node root-only; type1 when asked', () => {
    expect(chooseBackend(UUID, 'auto', host({ cdevs: false }))).toMatchObject({
      backend: 'type1',
      iommufdUnavailable: expect.stringMatching(
        /^the kernel has no VFIO device cdevs .*vfio4 has no device number/,
      ),
    });
    expect(chooseBackend(UUID, 'auto', host({ denied: ['vfio/devices/vfio4'] }))).toMatchObject({
      backend: 'type1',
      iommufdUnavailable: expect.stringMatching(/vfio4 \(the device's cdev\): EACCES/),
    });
    expect(chooseBackend(UUID, 'type1', host({}))).toMatchObject({ backend: 'type1', cdev: null });
  });

  it.each<[string, string, Host, string, RegExp, RegExp]>([
    [
      'an unknown UUID',
      '0d9c2b7e-6d1e-4c59-9d4e-7c2f2b0a9f11',
      {},
      'ENOCDEV',
      /^no mediated device 0d9c2b7e/,
      /mdev list/,
    ],
    [
      'an mdev its driver did not register',
      UUID,
      { mdevDriver: null },
      'ENOCDEV',
      /its driver \(no driver\) has not registered it with VFIO$/,
      /dmesg/,
    ],
    [
      'a kernel without cdevs',
      UUID,
      { cdevs: false },
      'ENOCDEV',
      /built without VFIO_DEVICE_CDEV/,
      /type1 backend/,
    ],
  ])('an iommufd override fails for %s, naming the device', (_why, uuid, h, code, message, hint) => {
    const e = refused(() => chooseBackend(uuid, 'iommufd', host(h)));
    expect([e.code, e.bdf]).toEqual([code, uuid]);
    expect(e.message).toMatch(message);
    expect(e.hint).toMatch(hint);
  });
});

describe("info's prediction for a device not on vfio-pci", () => {
  it('is iommufd when the kernel has it and cdevs, else type1 with the reason, or none when forced and absent', () => {
    expect(predictedBackend('auto', host({ driver: 'e1000e' }))).toMatchObject({
      kind: 'iommufd',
      opened: false,
    });
    const noCdev = host({ driver: 'e1000e', cdevs: false });
    expect(predictedBackend('auto', noCdev)).toMatchObject({
      kind: 'type1',
      reason: expect.stringMatching(/VFIO_DEVICE_CDEV/),
    });
    expect(predictedBackend('iommufd', noCdev)).toMatchObject({ kind: null });
    expect(predictedBackend('type1', noCdev)).toMatchObject({
      kind: 'type1',
      reason: expect.stringMatching(/asked for type1/),
    });
  });
});
