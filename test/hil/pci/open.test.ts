import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { activeBackend } from '../backends';
import { describePci } from './lab';

describePci('edu', 'opening by BDF', (bdfOf) => {
  it('opens in an IOMMU context of its own and releases the group (or cdev) on close', () => {
    const bus = new SystemAddressSpaces();
    const backend = activeBackend();
    const dev = VfioPciDevice.openByBdf(bus, bdfOf(), { backend });
    expect([dev.bdf, dev.backend]).toEqual([bdfOf(), backend]);
    // KVM's VFIO device is given the group on type1, the device cdev on iommufd.
    expect(dev.vfioFile!.fd).toBe(
      backend === 'type1' ? dev.group!.fd : (dev.device as unknown as { fd: number }).fd,
    );
    expect(dev.vendorId).toBe(0x1234);
    expect(dev.bars[0]?.mmaps).toHaveLength(1);
    dev.close();
    // The group is free again: a second open succeeds.
    const again = VfioPciDevice.openByBdf(bus, bdfOf(), { backend });
    expect(again.bars[0]?.size).toBe(0x100000);
    bus.close();
    expect(again.closed).toBe(true);
  });
});
