import { PciBus, VfioPciDevice } from '../../../lib/pci';
import { describePci } from './lab';

describePci('edu', 'opening by BDF', (bdfOf) => {
  it('opens in a container of its own and releases the group on close', () => {
    const bus = new PciBus();
    const dev = VfioPciDevice.openByBdf(bus, bdfOf());
    expect(dev.bdf).toBe(bdfOf());
    expect(dev.vendorId).toBe(0x1234);
    expect(dev.bars[0]?.mmaps).toHaveLength(1);
    dev.close();
    // The group is free again: a second open succeeds.
    const again = VfioPciDevice.openByBdf(bus, bdfOf());
    expect(again.bars[0]?.size).toBe(0x100000);
    bus.close();
    expect(again.closed).toBe(true);
  });
});
