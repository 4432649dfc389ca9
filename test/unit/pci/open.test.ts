// Opening by BDF (open.ts): the group and container opened for a device, and closed again with it,
// or at once when the device cannot be built. lib/vfio is replaced by recording fakes.
import { PciBus, VfioPciDevice } from '../../../lib/pci';
import type { Container } from '../../../lib/vfio';
import { FakeVfioDevice } from './fake-device';
import { e1000eSpec } from './helpers';

/** What the fakes of lib/vfio did, in order. */
const mockCalls: string[] = [];
/** Set by a test to make the next Group.openByBdf fail. */
const mockFail: { group: Error | null } = { group: null };

function mockContainer(name: string) {
  let iommuType: string | null = null;
  return {
    name,
    get iommuType() {
      return iommuType;
    },
    setIommu: () => {
      mockCalls.push(`${name}.setIommu`);
      iommuType = 'type1v2';
    },
    close: () => void mockCalls.push(`${name}.close`),
  };
}

/** A fake VFIO device that records its closing. */
class ClosingDevice extends FakeVfioDevice {
  close(): void {
    mockCalls.push('device.close');
  }
  async closeAsync(): Promise<void> {
    mockCalls.push('device.closeAsync');
    await new Promise(setImmediate);
  }
}

jest.mock('../../../lib/vfio', () => ({
  Container: { open: () => mockContainer('own container') },
  Group: {
    openByBdf: (bdf: string) => {
      mockCalls.push(`group.open ${bdf}`);
      if (mockFail.group) throw mockFail.group;
      return {
        fd: 42,
        setContainer: (c: { name: string }) => void mockCalls.push(`group.setContainer ${c.name}`),
        openDevice: () => new ClosingDevice(e1000eSpec()),
        openDeviceAsync: () =>
          new Promise((resolve) => setImmediate(() => resolve(new ClosingDevice(e1000eSpec())))),
        close: () => void mockCalls.push('group.close'),
      };
    },
  },
}));

const BDF = '0000:00:05.0';
const badQuirk = {
  name: 'bad',
  match: { bar: 0 },
  overlays: () => [{ name: 'bad-quirk', offset: 0, size: 0, ops: { read: () => 0, write: () => undefined } }],
};

beforeEach(() => {
  mockCalls.length = 0;
  mockFail.group = null;
});

describe('openByBdf', () => {
  it('rejects a BDF that is not a string before touching VFIO', () => {
    expect(() => VfioPciDevice.openByBdf(new PciBus(), 3 as unknown as string)).toThrow(TypeError);
  });

  it('opens the group into a container of its own, and closes device, group and container with the device', () => {
    const dev = VfioPciDevice.openByBdf(new PciBus(), BDF);
    expect(mockCalls).toEqual([
      `group.open ${BDF}`,
      'group.setContainer own container',
      'own container.setIommu',
    ]);
    expect(dev.group).toMatchObject({ fd: 42 });
    mockCalls.length = 0;
    dev.close();
    dev.close();
    expect(mockCalls).toEqual(['device.close', 'group.close', 'own container.close']);
    expect(dev.group).toBeNull();
  });

  it("leaves the caller's container open, and sets its IOMMU only when it has none", () => {
    const container = mockContainer('given container');
    container.setIommu();
    mockCalls.length = 0;
    const dev = VfioPciDevice.openByBdf(new PciBus(), BDF, { container: container as unknown as Container });
    dev.close();
    expect(mockCalls).toEqual([
      `group.open ${BDF}`,
      'group.setContainer given container',
      'device.close',
      'group.close',
    ]);
  });

  it('closes what it opened, newest first, when the device cannot be built or the group cannot be opened', () => {
    expect(() => VfioPciDevice.openByBdf(new PciBus(), BDF, { quirks: [badQuirk] })).toThrow(RangeError);
    expect(mockCalls.slice(-3)).toEqual(['device.close', 'group.close', 'own container.close']);
    mockCalls.length = 0;
    mockFail.group = new Error('no group');
    expect(() => VfioPciDevice.openByBdf(new PciBus(), BDF)).toThrow('no group');
    expect(mockCalls).toEqual([`group.open ${BDF}`, 'own container.close']);
  });
});

describe('openByBdfAsync', () => {
  it('builds the device openByBdf builds, and closeAsync closes the VFIO device on the pool first', async () => {
    const sync = VfioPciDevice.openByBdf(new PciBus(), BDF);
    const dev = await VfioPciDevice.openByBdfAsync(new PciBus(), BDF);
    expect(dev.mapinfo()).toEqual(sync.mapinfo());
    expect(dev.bars.map((b) => b?.size)).toEqual(sync.bars.map((b) => b?.size));
    expect(dev.group).toMatchObject({ fd: 42 });
    sync.close();
    mockCalls.length = 0;
    await dev.closeAsync();
    expect(mockCalls).toEqual(['device.closeAsync', 'device.close', 'group.close', 'own container.close']);
  });

  it('closes what it opened when the device cannot be built', async () => {
    await expect(VfioPciDevice.openByBdfAsync(new PciBus(), BDF, { quirks: [badQuirk] })).rejects.toThrow(
      RangeError,
    );
    expect(mockCalls.slice(-3)).toEqual(['device.close', 'group.close', 'own container.close']);
  });
});
