import * as fs from 'node:fs';
import * as path from 'node:path';

import { Group, VfioError, normalizeBdf } from '../../lib';
import { driverKeepsViable, groupMembers, notViableHint } from '../../lib/vfio/sysfs';
import { tempDir } from './helpers';

/** A fake sysfs with IOMMU group 12 = {00:03.0 e1000, 00:03.1 vfio-pci, 00:03.2 no driver}. */
function fakeSysfs(root: string): void {
  const mk = (p: string) => fs.mkdirSync(path.join(root, p), { recursive: true });
  const link = (target: string, p: string) => fs.symlinkSync(target, path.join(root, p));
  mk('kernel/iommu_groups/12/devices');
  mk('bus/pci/drivers/e1000');
  mk('bus/pci/drivers/vfio-pci');
  for (const [bdf, driver] of [
    ['0000:00:03.0', 'e1000'],
    ['0000:00:03.1', 'vfio-pci'],
    ['0000:00:03.2', null],
  ] as const) {
    mk(`devices/pci0000:00/${bdf}`);
    link(`../../../kernel/iommu_groups/12`, `devices/pci0000:00/${bdf}/iommu_group`);
    if (driver) link(`../../../bus/pci/drivers/${driver}`, `devices/pci0000:00/${bdf}/driver`);
    mk('bus/pci/devices');
    link(`../../../devices/pci0000:00/${bdf}`, `bus/pci/devices/${bdf}`);
    link(`../../../../devices/pci0000:00/${bdf}`, `kernel/iommu_groups/12/devices/${bdf}`);
  }
  mk('devices/pci0000:00/0000:00:04.0');
  link('../../../devices/pci0000:00/0000:00:04.0', 'bus/pci/devices/0000:00:04.0');
}

describe('sysfs lookups on a fake tree', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
    fakeSysfs(tmp.dir);
  });
  afterEach(() => tmp.remove());

  test('Group.numberOf follows iommu_group', () => {
    expect(Group.numberOf('0000:00:03.1', { sysfsRoot: tmp.dir })).toBe(12);
    expect(Group.numberOf('00:03.0', { sysfsRoot: tmp.dir })).toBe(12);
  });

  test('VFIO_BRIDGE_SYSFS_ROOT overrides the default root', () => {
    process.env['VFIO_BRIDGE_SYSFS_ROOT'] = tmp.dir;
    try {
      expect(Group.numberOf('0000:00:03.2')).toBe(12);
    } finally {
      delete process.env['VFIO_BRIDGE_SYSFS_ROOT'];
    }
  });

  test('numberOf errors: no device, no IOMMU group', () => {
    let e = (() => {
      try {
        Group.numberOf('0000:00:1f.7', { sysfsRoot: tmp.dir });
      } catch (err) {
        return err as VfioError;
      }
      throw new Error('no error');
    })();
    expect(e).toBeInstanceOf(VfioError);
    expect(e.code).toBe('ENOENT');
    expect(e.message).toMatch(/no PCI device 0000:00:1f.7/);
    e = (() => {
      try {
        Group.numberOf('0000:00:04.0', { sysfsRoot: tmp.dir });
      } catch (err) {
        return err as VfioError;
      }
      throw new Error('no error');
    })();
    expect(e.message).toMatch(/has no IOMMU group/);
    expect(e.hint).toMatch(/intel_iommu=on/);
  });

  test('members lists every device with its driver', () => {
    expect(groupMembers(12, { sysfsRoot: tmp.dir })).toEqual([
      { bdf: '0000:00:03.0', driver: 'e1000' },
      { bdf: '0000:00:03.1', driver: 'vfio-pci' },
      { bdf: '0000:00:03.2', driver: null },
    ]);
    expect(() => groupMembers(99, { sysfsRoot: tmp.dir })).toThrow(VfioError);
  });

  test('Group.members on an open group uses the same sysfs root', () => {
    fs.writeFileSync(path.join(tmp.dir, '12'), '');
    const g = Group.open(12, { devDir: tmp.dir, sysfsRoot: tmp.dir });
    expect(g.members().map((m) => m.driver)).toEqual(['e1000', 'vfio-pci', null]);
    g.close();
  });

  test('the not-viable explanation lists members, drivers, the blocker and the fix', () => {
    const hint = notViableHint(12, groupMembers(12, { sysfsRoot: tmp.dir }), { sysfsRoot: tmp.dir });
    expect(hint).toContain('0000:00:03.0 (e1000) <- blocks');
    expect(hint).toContain('0000:00:03.1 (vfio-pci)');
    expect(hint).not.toContain('0000:00:03.1 (vfio-pci) <- blocks');
    expect(hint).toContain('0000:00:03.2 (no driver)');
    expect(hint).toContain(`echo vfio-pci > ${tmp.dir}/bus/pci/devices/0000:00:03.0/driver_override`);
    expect(hint).toContain(`echo 0000:00:03.0 > ${tmp.dir}/bus/pci/devices/0000:00:03.0/driver/unbind`);
    expect(hint).not.toContain('0000:00:03.1/driver_override');
    expect(hint).toMatch(/bound to vfio-pci or to no driver/);
  });

  test('drivers that keep a group viable', () => {
    expect([null, 'vfio-pci', 'pci-stub', 'pcieport'].every(driverKeepsViable)).toBe(true);
    expect(driverKeepsViable('e1000e')).toBe(false);
  });
});

describe('normalizeBdf', () => {
  test('accepts full and short forms, any case', () => {
    expect(normalizeBdf('0000:00:1F.7')).toBe('0000:00:1f.7');
    expect(normalizeBdf('3b:00.1')).toBe('0000:3b:00.1');
  });
  test('rejects everything else', () => {
    for (const bad of ['', '0000:00:20.0', '00:03.8', 'x', '0000:00:03'])
      expect(() => normalizeBdf(bad)).toThrow(RangeError);
    expect(() => normalizeBdf(3 as unknown as string)).toThrow(TypeError);
  });
});
