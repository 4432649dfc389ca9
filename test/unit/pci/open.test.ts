// Opening by BDF (open.ts): the IOMMU context a device is opened into (one of its own of the backend
// asked for, or the caller's Container or Ioas), and what is closed with the device, or at once when
// the device cannot be built. lib/vfio is replaced by recording fakes.
import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import type { Container, Ioas, VfioBackend } from '../../../lib/vfio';
import { FakeVfioDevice } from '../../support/fake-device';
import { e1000eSpec } from '../../support/pci-helpers';

/** What the fakes of lib/vfio did, in order. */
const mockCalls: string[] = [];
/** Set by a test to make the next open of a device fail. */
const mockFail: { open: Error | null } = { open: null };

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

/** A fake IOMMU context: type1 hands out a group, iommufd the device itself as KVM's VFIO file. */
function mockBackend(name: string, kind: 'type1' | 'iommufd') {
  const opened = () => {
    mockCalls.push(`${name}.openDevice`);
    if (mockFail.open) throw mockFail.open;
    const device = new ClosingDevice(e1000eSpec());
    const group = kind === 'type1' ? { fd: 42 } : null;
    return {
      device,
      group,
      groupNumber: 7,
      vfioFile: group ?? { fd: 43 },
      release: () => {
        device.close();
        if (group) mockCalls.push('group.close');
      },
    };
  };
  return {
    kind,
    decision: null,
    dma: {},
    closed: false,
    openDevice: opened,
    openDeviceAsync: () => new Promise((resolve) => setImmediate(() => resolve(opened()))),
    close: () => void mockCalls.push(`${name}.close`),
    [Symbol.dispose]() {},
  };
}

class MockIoas {
  readonly kind = 'iommufd';
}

jest.mock('../../../lib/vfio', () => ({
  Ioas: MockIoas,
  checkBackendChoice: (v: unknown) => {
    if (v !== undefined && v !== 'auto' && v !== 'type1' && v !== 'iommufd')
      throw new RangeError(`backend ${String(v)}`);
    return v ?? 'auto';
  },
  openBackend: (bdf: string, o: { backend: string }) => {
    mockCalls.push(`openBackend ${bdf} ${o.backend}`);
    return mockBackend('own', o.backend === 'iommufd' ? 'iommufd' : 'type1');
  },
  Type1Backend: { wrap: () => mockBackend('given container', 'type1') },
  IommufdBackend: { wrap: () => mockBackend('given ioas', 'iommufd') },
}));

const BDF = '0000:00:05.0';
const badQuirk = {
  name: 'bad',
  match: { bar: 0 },
  overlays: () => [{ name: 'bad-quirk', offset: 0, size: 0, ops: { read: () => 0, write: () => undefined } }],
};

beforeEach(() => {
  mockCalls.length = 0;
  mockFail.open = null;
});

describe('openByBdf', () => {
  it('rejects a BDF that is not a string, and a backend it does not know, before touching VFIO', () => {
    expect(() => VfioPciDevice.openByBdf(new SystemAddressSpaces(), 3 as unknown as string)).toThrow(
      TypeError,
    );
    expect(() =>
      VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF, { backend: 'vfio' as never }),
    ).toThrow(RangeError);
    expect(mockCalls).toEqual([]);
  });

  it('opens the device into a context of its own (auto), and closes device, group and context with it', () => {
    const dev = VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF);
    expect(mockCalls).toEqual([`openBackend ${BDF} auto`, 'own.openDevice']);
    expect([dev.group, dev.vfioFile, dev.backend]).toEqual([{ fd: 42 }, { fd: 42 }, 'type1']);
    mockCalls.length = 0;
    dev.close();
    dev.close();
    expect(mockCalls).toEqual(['device.close', 'group.close', 'own.close']);
    expect([dev.group, dev.vfioFile]).toEqual([null, null]);
  });

  it('passes the backend asked for; on iommufd no group is opened and KVM gets the device cdev', () => {
    const dev = VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF, { backend: 'iommufd' });
    expect(mockCalls).toEqual([`openBackend ${BDF} iommufd`, 'own.openDevice']);
    expect([dev.group, dev.vfioFile, dev.backend]).toEqual([null, { fd: 43 }, 'iommufd']);
    mockCalls.length = 0;
    dev.close();
    expect(mockCalls).toEqual(['device.close', 'own.close']);
  });

  it("leaves the caller's container or IOAS open", () => {
    const a = VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF, { container: {} as Container });
    a.close();
    const b = VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF, {
      iommu: new MockIoas() as unknown as Ioas,
    });
    expect(b.backend).toBe('iommufd');
    b.close();
    const given = mockBackend('given backend', 'type1') as unknown as VfioBackend;
    VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF, { iommu: given }).close();
    expect(mockCalls).toEqual([
      'given container.openDevice',
      'device.close',
      'group.close',
      'given ioas.openDevice',
      'device.close',
      'given backend.openDevice',
      'device.close',
      'group.close',
    ]);
    expect(() =>
      VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF, { container: {} as Container, iommu: given }),
    ).toThrow(TypeError);
  });

  it('closes what it opened, newest first, when the device cannot be built or opened', () => {
    expect(() => VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF, { quirks: [badQuirk] })).toThrow(
      RangeError,
    );
    expect(mockCalls.slice(-3)).toEqual(['device.close', 'group.close', 'own.close']);
    mockCalls.length = 0;
    mockFail.open = new Error('no group');
    expect(() => VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF)).toThrow('no group');
    expect(mockCalls).toEqual([`openBackend ${BDF} auto`, 'own.openDevice', 'own.close']);
  });
});

describe('openByMdev', () => {
  const UUID = '83b8f4f2-509f-382f-3c1e-e6bfe0fa1001';

  it('asks the same backend choice for the UUID as for an address (auto, or the one given)', () => {
    const auto = VfioPciDevice.openByMdev(new SystemAddressSpaces(), UUID);
    const cdev = VfioPciDevice.openByMdev(new SystemAddressSpaces(), UUID, { backend: 'iommufd' });
    // The fakes hand out type1 for auto: what auto decides is chooseBackend's (test/unit/vfio).
    expect([auto.backend, cdev.backend, cdev.group, cdev.vfioFile]).toEqual([
      'type1',
      'iommufd',
      null,
      { fd: 43 },
    ]);
    auto.close();
    cdev.close();
    expect(mockCalls).toEqual([
      `openBackend ${UUID} auto`,
      'own.openDevice',
      `openBackend ${UUID} iommufd`,
      'own.openDevice',
      'device.close',
      'group.close',
      'own.close',
      'device.close',
      'own.close',
    ]);
  });

  it("opens into the caller's IOAS or container, whichever it is", () => {
    VfioPciDevice.openByMdev(new SystemAddressSpaces(), UUID, {
      iommu: new MockIoas() as unknown as Ioas,
    }).close();
    VfioPciDevice.openByMdev(new SystemAddressSpaces(), UUID, { container: {} as Container }).close();
    expect(mockCalls).toEqual([
      'given ioas.openDevice',
      'device.close',
      'given container.openDevice',
      'device.close',
      'group.close',
    ]);
  });
});

describe('openByBdfAsync', () => {
  it('builds the device openByBdf builds, and closeAsync closes the VFIO device on the pool first', async () => {
    const sync = VfioPciDevice.openByBdf(new SystemAddressSpaces(), BDF);
    const dev = await VfioPciDevice.openByBdfAsync(new SystemAddressSpaces(), BDF);
    expect(dev.mapinfo()).toEqual(sync.mapinfo());
    expect(dev.bars.map((b) => b?.size)).toEqual(sync.bars.map((b) => b?.size));
    expect(dev.group).toMatchObject({ fd: 42 });
    sync.close();
    mockCalls.length = 0;
    await dev.closeAsync();
    expect(mockCalls).toEqual(['device.closeAsync', 'device.close', 'group.close', 'own.close']);
  });

  it('closes what it opened when the device cannot be built', async () => {
    await expect(
      VfioPciDevice.openByBdfAsync(new SystemAddressSpaces(), BDF, { quirks: [badQuirk] }),
    ).rejects.toThrow(RangeError);
    expect(mockCalls.slice(-3)).toEqual(['device.close', 'group.close', 'own.close']);
  });
});
