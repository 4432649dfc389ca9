// The release check on a fake device: bus mastering, MSI, MSI-X and a low-power state are each
// named with their register, everything is released anyway, and an idle device releases cleanly.
import { TestDevice, leftBusyFindings, LeftBusyError } from '../../../lib/testing';
import type { Container, Device, Group } from '../../../lib/vfio';
import { FakeVfioDevice } from '../../support/fake-device';

/** A fake with PM at 0x40, MSI-X at 0x50 and MSI at 0x60. */
function fakeDevice(): FakeVfioDevice {
  const d = new FakeVfioDevice({
    vendorId: 0x1234,
    deviceId: 0x11e8,
    bars: [{ size: 0x1000 }],
    msix: { entries: 4, tableBar: 0, tableOffset: 0x800, pbaBar: 0, pbaOffset: 0xc00 },
  });
  d.config[0x51] = 0x60;
  d.config[0x60] = 0x05;
  d.config[0x61] = 0;
  return d;
}

const readOf = (d: FakeVfioDevice) => (off: number, size: 1 | 2 | 4) => d.read(7, off, size) as number;

function testDevice(fake: FakeVfioDevice, log: string[], restore = async () => void log.push('restore')) {
  let closed = false;
  const device = {
    bdf: fake.bdf,
    get closed() {
      return closed;
    },
    read: (r: number, o: number, s: 1 | 2 | 4) => fake.read(r, o, s),
    close: () => {
      closed = true;
      log.push('device');
    },
  } as unknown as Device;
  const group = { close: () => void log.push('group') } as unknown as Group;
  const container = { close: () => void log.push('container') } as unknown as Container;
  return new TestDevice({ role: 'edu', bdf: fake.bdf, container, group, device, boundFrom: null, restore });
}

describe('leftBusyFindings', () => {
  test('an idle device has none', () => {
    expect(leftBusyFindings(readOf(fakeDevice()))).toEqual([]);
  });

  test('names each register left on', () => {
    const d = fakeDevice();
    d.configView.setUint16(0x04, 0x0106, true);
    d.configView.setUint16(0x52, 0x8003, true);
    d.configView.setUint16(0x62, 0x0001, true);
    d.configView.setUint16(0x44, 0x0003, true);
    expect(leftBusyFindings(readOf(d))).toEqual([
      { register: 'PCI_COMMAND', offset: 0x04, value: 0x0106, problem: 'bus mastering is on (bit 2)' },
      { register: 'MSI control', offset: 0x62, value: 0x0001, problem: 'MSI is enabled (bit 0)' },
      { register: 'MSI-X control', offset: 0x52, value: 0x8003, problem: 'MSI-X is enabled (bit 15)' },
      { register: 'PMCSR', offset: 0x44, value: 0x0003, problem: 'the device is in D3hot, not D0' },
    ]);
  });

  test('survives a capability list that loops', () => {
    const d = fakeDevice();
    d.config[0x61] = 0x40;
    expect(leftBusyFindings(readOf(d))).toEqual([]);
  });
});

describe('TestDevice.release', () => {
  test('releases an idle device: device, group, container, then the driver', async () => {
    const log: string[] = [];
    const dev = testDevice(fakeDevice(), log);
    await dev.release();
    await dev.closeAsync(); // idempotent
    expect(log).toEqual(['device', 'group', 'container', 'restore']);
    expect(dev.released).toBe(true);
    expect(() => dev.dmaBuffer(4096)).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
  });

  test('fails with ELEFTBUSY naming the device and the register, after releasing everything', async () => {
    const log: string[] = [];
    const fake = fakeDevice();
    fake.configView.setUint16(0x04, 0x0006, true);
    const dev = testDevice(fake, log);
    const e = (await dev.release().catch((x: unknown) => x)) as LeftBusyError;
    expect(e).toBeInstanceOf(LeftBusyError);
    expect(e.code).toBe('ELEFTBUSY');
    expect(e.bdf).toBe('0000:00:03.0');
    expect(e.message).toBe(
      'edu (0000:00:03.0) was left busy: bus mastering is on (bit 2): PCI_COMMAND at 0x04 reads 0x0006',
    );
    expect(e.hint).toMatch(/clear bus mastering/);
    expect(log).toEqual(['device', 'group', 'container', 'restore']);
  });

  test('checkIdle: false skips the check; a failed restore is reported', async () => {
    const fake = fakeDevice();
    fake.configView.setUint16(0x44, 0x0003, true);
    const boom = new Error('restore failed');
    const dev = testDevice(fake, [], async () => {
      throw boom;
    });
    await expect(dev.release({ checkIdle: false })).rejects.toBe(boom);
  });

  test('a left-busy device whose restore also fails carries the restore error as cause', async () => {
    const fake = fakeDevice();
    fake.configView.setUint16(0x52, 0x8000, true);
    const boom = new Error('restore failed');
    const dev = testDevice(fake, [], async () => {
      throw boom;
    });
    const e = (await dev[Symbol.asyncDispose]().catch((x: unknown) => x)) as LeftBusyError;
    expect(e.message).toMatch(/MSI-X is enabled \(bit 15\): MSI-X control at 0x52 reads 0x8000/);
    expect(e.cause).toBe(boom);
  });
});
