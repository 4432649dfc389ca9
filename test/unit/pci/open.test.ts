// Opening by BDF (open.ts).
import { PciBus, VfioPciDevice } from '../../../lib/pci';

describe('openByBdf', () => {
  it('rejects a BDF that is not a string before touching VFIO', () => {
    expect(() => VfioPciDevice.openByBdf(new PciBus(), 3 as unknown as string)).toThrow(TypeError);
  });
});
