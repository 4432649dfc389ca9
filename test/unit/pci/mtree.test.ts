// The stacks as QEMU's `info mtree` shows them, with the mapinfo column.
import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { FakeVfioDevice } from '../../support/fake-device';
import { e1000eSpec, enableDecode, ivshmemSpec, openFake, placeBar } from '../../support/pci-helpers';

describe('mapinfo', () => {
  it('renders a mapinfo column in the flat mtree and in the JSON', () => {
    const { bus, dev } = openFake();
    placeBar(dev, 3, 0xfebf0000);
    enableDecode(dev);
    const text = bus.mtree('memory', { flat: true });
    expect(text).toMatch(/msix-table.*emulated/);
    expect(text).toMatch(/BAR 3 mmaps\[0\].*trapped-mmap/);
    expect(text).toMatch(/BAR 3 mmaps\[0\].*direct/);
    const json = JSON.parse(JSON.stringify(bus.mtreeJson()));
    expect(json.mapinfo).toContainEqual(
      expect.objectContaining({ name: 'msix-table', mapinfo: 'emulated', barOffset: 0 }),
    );
  });
});

describe('info mtree', () => {
  it("renders QEMU's stack, names and priorities for an e1000e BAR 3 and an ivshmem-as-RTL8168 BAR 2", () => {
    const bus = new SystemAddressSpaces();
    const e = VfioPciDevice.open(bus, new FakeVfioDevice(e1000eSpec()));
    placeBar(e, 3, 0xfebf0000);
    enableDecode(e);
    const v = VfioPciDevice.open(bus, new FakeVfioDevice(ivshmemSpec()), {
      vendorId: 0x10ec,
      deviceId: 0x8168,
    });
    placeBar(v, 2, 0x8_0000_0000);
    enableDecode(v);
    const tree = bus.mtree('memory').split('\n');
    expect(tree).toEqual(
      expect.arrayContaining([
        '    00000000febf0000-00000000febf3fff (prio 1, i/o): 0000:00:05.0 base BAR 3',
        '      00000000febf0000-00000000febf004f (prio 0, i/o): msix-table',
        '      00000000febf0000-00000000febf3fff (prio 0, i/o): 0000:00:05.0 BAR 3',
        '        00000000febf0000-00000000febf3fff (prio 0, ramd): 0000:00:05.0 BAR 3 mmaps[0]',
        '    0000000800000000-00000008000fffff (prio 1, i/o): 0000:00:06.0 base BAR 2',
        '        0000000800000070-0000000800000073 (prio 1, i/o): vfio-rtl8168-window-data-quirk',
        '        0000000800000074-0000000800000077 (prio 1, i/o): vfio-rtl8168-window-address-quirk',
      ]),
    );
    const flat = bus.mtree('memory', { flat: true }).split('\n');
    expect(flat).toEqual(
      expect.arrayContaining([
        '  0000000800000000-000000080000006f (prio 0, ramd): 0000:00:06.0 BAR 2 mmaps[0] trapped-mmap',
        '  0000000800000070-0000000800000073 (prio 1, i/o): vfio-rtl8168-window-data-quirk emulated',
      ]),
    );
  });
});
