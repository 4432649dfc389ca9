import { Machine } from 'vfio-bridge';

using m = Machine.create({ ramSize: 2 * 2 ** 30, pciHole: { start: 0xc0000000, size: 0x40000000 } });
const edu = m.addDevice('0000:00:03.0'); // the machine's container; the DMA listener starts here
edu.configWrite(0x10, 4, 0xc0000000); // the guest places BAR 0 in the PCI hole ...
edu.configWrite(0x04, 2, 0x0007); // ... and enables decode and bus mastering
m.gpaView(0x10000, 4096).setUint32(0, 0x12345678, true); // guest RAM, zero-copy
console.log(m.dma!.mappings()); // [{ iova: 0, size: 0x80000000, region: 'ram-below-4g', kind: 'ram', ... }, BAR 0 ...]
m.on('guest-error', (e) => {
  // dma-skipped: a section the IOMMU cannot map, named by absolute range (once each);
  // dma-commit-failed: RAM that could not be mapped (the commit was undone)
  if (e.source === 'dma') console.warn(`${e.kind}: ${e.message}`);
});
