// Errors whose state the library knows: each says what happened and what to do, on real vfio-pci.
import { Container, Group } from '../../lib';
import { bdfOf, caught, describeDevice, openDevice, ROLES } from './hil';

function caughtAny(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, nothing was thrown');
}

describeDevice('edu', 'error hints', (bdf) => {
  test('setIommu twice says the type is already set', () => {
    const o = openDevice(bdf());
    try {
      const e = caught(() => o.container.setIommu());
      expect(e.code).toBe('EINVAL');
      expect(e.message).toMatch(/already set \(Type1v2\)/);
      expect(e.hint).toMatch(/once per container/);
      expect(o.container.iommuType).toBe('Type1v2');
    } finally {
      o.close();
    }
  });

  test('setContainer twice, or onto another container, says which and what to do', () => {
    const o = openDevice(bdf());
    const other = Container.open();
    try {
      const same = caught(() => o.group.setContainer(o.container));
      expect(same.code).toBe('EINVAL');
      expect(same.message).toMatch(/already attached to this container/);
      const elsewhere = caught(() => o.group.setContainer(other));
      expect(elsewhere.message).toMatch(/already attached to another container/);
      expect(elsewhere.hint).toMatch(/unsetContainer\(\) first/);
      // The device still works: nothing was changed.
      expect(o.device.info().pci).toBe(true);
    } finally {
      other.close();
      o.close();
    }
  });

  test('opening a device through a group it is not in names the members and its own group', () => {
    const o = openDevice(bdf());
    try {
      const stranger = bdfOf(ROLES.find((r) => r !== 'edu')!);
      const e = caught(() => o.group.openDevice(stranger));
      expect(e.code).toBe('ENODEV');
      expect(e.hint).toContain(`group ${o.group.number} holds ${bdf()}`);
      expect(e.hint).toContain(`${stranger} is in group ${Group.numberOf(stranger)}`);
    } finally {
      o.close();
    }
  });

  test('a second open of a device this process holds is refused, naming the owner', () => {
    const o = openDevice(bdf());
    try {
      const e = caught(() => o.group.openDevice(bdf()));
      expect(e.code).toBe('EBUSY');
      expect(e.message).toContain(`through a Device from ${o.group.path}`);
      o.device.close();
      const again = o.group.openDevice(bdf());
      expect(again.info().pci).toBe(true);
      again.close();
    } finally {
      o.close();
    }
  });
});

describe('lab devices without a reset method or a ROM', () => {
  const roles = ROLES.filter((r) => process.env.VFIO_BRIDGE_HIL_DEVICES?.includes(`${r}=`));
  const run = roles.length > 0 || process.env.CI ? test : test.skip;

  run('reset() on a device without function reset says so, and what exists instead', () => {
    let checked = 0;
    for (const role of roles) {
      const o = openDevice(bdfOf(role));
      try {
        if (o.device.info().reset) continue;
        const e = caught(() => o.device.reset());
        expect(e.code).toBe('EINVAL');
        expect(e.message).toMatch(/has no function reset/);
        expect(e.hint).toMatch(/hot reset/);
        checked++;
      } finally {
        o.close();
      }
    }
    // The lab's edu has neither FLR nor a PM capability, so at least one device is checked.
    expect(checked).toBeGreaterThan(0);
  });

  run('an empty ROM region says the device has no ROM', () => {
    let checked = 0;
    for (const role of roles) {
      const o = openDevice(bdfOf(role));
      try {
        if (o.device.regionInfo(6).size !== 0) continue;
        const e = caughtAny(() => o.device.read(6, 0, 4));
        expect(e).toBeInstanceOf(RangeError);
        expect(e.message).toMatch(/has no expansion ROM/);
        checked++;
      } finally {
        o.close();
      }
    }
    expect(checked).toBeGreaterThan(0);
  });
});
