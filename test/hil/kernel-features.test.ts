// What the lab's own kernel (scripts/lab/kernel/lab.config) adds to the lab: IOMMUFD's /dev/iommu
// and a VFIO device cdev per vfio-pci device beside the type1 container's /dev/vfio/vfio, and
// mediated devices, shown with the mtty sample: loaded with its dependencies, an mdev created and
// removed through sysfs, then unloaded. On a kernel without them the suites say what is missing.
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ModuleIndex, moduleKey } from '../../lib/cli/lab/modules';
import { describeKernel, devices } from './hil';

const isChar = (p: string): boolean =>
  fs.statSync(p, { throwIfNoEntry: false })?.isCharacterDevice() === true;
/** A device node's major:minor, as sysfs `dev` files write it. */
const devNumbers = (p: string): string => {
  const rdev = fs.statSync(p).rdev;
  return `${Math.floor(rdev / 256) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`;
};
const loaded = (name: string): boolean => fs.existsSync(`/sys/module/${moduleKey(name)}`);

/** Runs busybox (the lab's root has no kmod): insmod and rmmod. */
function busybox(...args: string[]): void {
  const r = spawnSync('busybox', args, { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    throw new Error(`busybox ${args.join(' ')} failed: ${r.error?.message ?? r.stderr.trim()}`);
}

/** Loads `name` and what it depends on from the lab kernel's modules; returns those it loaded. */
function load(name: string): string[] {
  const dir = process.env.VFIO_BRIDGE_LAB_MODULES;
  if (!dir) throw new Error('VFIO_BRIDGE_LAB_MODULES is not set: run in the lab (scripts/lab/lab.sh)');
  const index = ModuleIndex.load(dir);
  const { order, missing } = index.loadOrder([name]);
  if (missing.length > 0) throw new Error(`${dir} has no module ${missing.join(', ')}`);
  const fresh = order.filter((m) => !loaded(m));
  for (const m of fresh) busybox('insmod', index.file(m)!);
  return fresh;
}

describeKernel(
  ['IOMMUFD=y', 'VFIO_DEVICE_CDEV=y', 'VFIO_CONTAINER=y', 'IOMMUFD_VFIO_CONTAINER=n'],
  'both VFIO backends side by side',
  () => {
    test('/dev/iommu (IOMMUFD) and /dev/vfio/vfio (the type1 container) are both there', () => {
      expect([isChar('/dev/iommu'), isChar('/dev/vfio/vfio')]).toEqual([true, true]);
      expect(fs.existsSync('/sys/module/vfio_iommu_type1')).toBe(true);
    });

    test('each device on vfio-pci has a cdev in /dev/vfio/devices, the one its sysfs vfio-dev names', () => {
      expect(devices.size).toBeGreaterThan(0);
      for (const bdf of devices.values()) {
        const names = fs.readdirSync(`/sys/bus/pci/devices/${bdf}/vfio-dev`);
        expect(names).toEqual([expect.stringMatching(/^vfio[0-9]+$/)]);
        const node = `/dev/vfio/devices/${names[0]}`;
        expect(isChar(node)).toBe(true);
        const sysDev = fs.readFileSync(`/sys/bus/pci/devices/${bdf}/vfio-dev/${names[0]}/dev`, 'utf8').trim();
        expect(`${bdf} ${devNumbers(node)}`).toBe(`${bdf} ${sysDev}`);
      }
    });
  },
);

describeKernel(['VFIO_MDEV=m', 'SAMPLE_VFIO_MDEV_MTTY=m'], 'mediated devices: the mtty sample', () => {
  test('mtty loads, an mdev of type mtty-2 is created with its cdev and removed, and mtty unloads', () => {
    // Another suite (test/hil/mdev) may have loaded it already and keeps it: then it stays loaded.
    const fresh = load('mtty');
    expect(loaded('mtty')).toBe(true);
    const uuid = randomUUID();
    const type = '/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2';
    const mdev = `/sys/bus/mdev/devices/${uuid}`;
    try {
      expect(fs.readFileSync(path.join(type, 'name'), 'utf8').trim()).toBe('Dual port serial');
      const before = Number(fs.readFileSync(path.join(type, 'available_instances'), 'utf8'));
      fs.writeFileSync(path.join(type, 'create'), uuid);
      expect(fs.realpathSync(path.join(mdev, 'mdev_type'))).toBe(fs.realpathSync(type));
      expect(Number(fs.readFileSync(path.join(type, 'available_instances'), 'utf8'))).toBe(before - 1); // two of the free ports, counted in pairs
      expect(path.basename(fs.realpathSync(path.join(mdev, 'driver')))).toBe('mtty');
      const [cdev] = fs.readdirSync(path.join(mdev, 'vfio-dev'));
      expect(isChar(`/dev/vfio/devices/${cdev}`)).toBe(true);
      expect(fs.existsSync(path.join(mdev, 'iommu_group'))).toBe(true);
      fs.writeFileSync(path.join(mdev, 'remove'), '1');
      expect(fs.existsSync(mdev)).toBe(false);
    } finally {
      if (fs.existsSync(mdev)) fs.writeFileSync(path.join(mdev, 'remove'), '1');
      for (const m of [...fresh].reverse()) busybox('rmmod', m);
    }
    if (fresh.includes('mtty')) expect(loaded('mtty')).toBe(false);
  });
});
