// The promise methods of Group and Device on real vfio-pci: a device opened on the thread pool
// works as one opened on the loop, its function reset and the bus reset run there too (failing as
// the synchronous calls fail), and closing one off the loop lets it be opened again.
import { Container, Group, type Device, type VfioError } from '../../lib';
import { capabilities, CONFIG, describeDevice, openDevice } from './hil';

async function failure(fn: () => unknown): Promise<VfioError> {
  try {
    await fn();
  } catch (e) {
    return e as VfioError;
  }
  throw new Error('expected a failure');
}

/** The fields a caller looks at, for comparing the synchronous and asynchronous failures. */
function fields(e: VfioError): unknown {
  return {
    name: e.name,
    code: e.code,
    errno: e.errno,
    op: e.op,
    path: e.path,
    bdf: e.bdf,
    hint: e.hint,
    message: e.message,
  };
}

/** Container, group and IOMMU as a VMM sets them up, the device not yet open. */
function attach(bdf: string): { container: Container; group: Group; close(): void } {
  const container = Container.open();
  const group = Group.openByBdf(bdf);
  try {
    group.setContainer(container);
    container.setIommu();
  } catch (e) {
    group.close();
    container.close();
    throw e;
  }
  return {
    container,
    group,
    close() {
      group.close();
      container.close();
    },
  };
}

describeDevice('edu', 'Group.openDeviceAsync and Device.closeAsync', (bdf) => {
  it('opens a working device off the loop, counts it as open meanwhile, and closes it off the loop', async () => {
    const a = attach(bdf());
    try {
      const p = a.group.openDeviceAsync(bdf());
      expect((await failure(() => a.group.openDevice(bdf()))).code).toBe('EBUSY');
      const d: Device = await p;
      expect(d.read(CONFIG, 0, 4)).toBe(0x11e81234);
      expect(d.info().numRegions).toBeGreaterThan(0);
      const closing = d.closeAsync();
      expect([d.closed, d.fd]).toEqual([true, -1]);
      await closing;
      const again = await a.group.openDeviceAsync(bdf());
      expect(again.read(CONFIG, 0, 2)).toBe(0x1234);
      again.close();
    } finally {
      a.close();
    }
  });

  it('rejects as openDevice throws when the group has no IOMMU yet', async () => {
    const container = Container.open();
    const group = Group.openByBdf(bdf());
    try {
      group.setContainer(container);
      const sync = await failure(() => group.openDevice(bdf()));
      const async = await failure(() => group.openDeviceAsync(bdf()));
      expect(fields(async)).toEqual(fields(sync));
      expect(async.hint).toContain('setIommu');
    } finally {
      group.close();
      container.close();
    }
  });

  it('closes the device again when the signal aborts while the kernel opens it', async () => {
    const a = attach(bdf());
    try {
      const ac = new AbortController();
      const p = a.group.openDeviceAsync(bdf(), { signal: ac.signal });
      ac.abort();
      expect((await failure(() => p)).name).toBe('AbortError');
      // Nothing of it is left open: the device opens again.
      (await a.group.openDeviceAsync(bdf())).close();
    } finally {
      a.close();
    }
  });

  it('Device.resetAsync refuses a device without a reset as reset() does', async () => {
    const o = openDevice(bdf());
    try {
      const sync = await failure(() => o.device.reset());
      const async = await failure(() => o.device.resetAsync());
      expect(fields(async)).toEqual(fields(sync));
      expect(async.code).toBe('EINVAL');
      expect(o.device.read(CONFIG, 0, 2)).toBe(0x1234);
    } finally {
      o.close();
    }
  });
});

describeDevice('e1000e', 'Device.resetAsync', (bdf) => {
  it('resets the device off the loop and leaves it in D0 and accessible', async () => {
    const o = openDevice(bdf());
    try {
      expect(o.device.info().reset).toBe(true);
      const pm = capabilities(o.device).get(0x01)!;
      await o.device.resetAsync();
      expect((o.device.read(CONFIG, pm + 4, 2) as number) & 3).toBe(0);
      const m = o.device.map(0, 0, 0x4000);
      try {
        expect(m.read32(0x08)).toBe(o.device.read(0, 0x08, 4));
      } finally {
        m.close();
      }
      // Closed while the reset runs: the reset finishes on the kernel's file, the fd is gone at once.
      const p = o.device.resetAsync();
      o.device.close();
      await p;
    } finally {
      o.close();
    }
    openDevice(bdf()).close();
  });
});

describeDevice('hotreset', 'Device.hotResetAsync', (bdf) => {
  it('resets the bus off the loop, names a missing group as hotReset does, and the device answers after', async () => {
    const o = openDevice(bdf());
    try {
      const sync = await failure(() => o.device.hotReset([]));
      const async = await failure(() => o.device.hotResetAsync([]));
      expect(fields(async)).toEqual(fields(sync));
      expect(async.code).toBe('EGROUPS');
      await o.device.hotResetAsync();
      expect(o.device.read(CONFIG, 0, 4)).toBe(0x11e81234);
      // The group may be closed while the reset runs: its fd was taken when the call was made.
      const p = o.device.hotResetAsync();
      o.group.close();
      await p;
    } finally {
      o.close();
    }
    openDevice(bdf()).close();
  });
});
