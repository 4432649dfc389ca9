import { describeDevice, waitForBytes, waitForRegister } from '../../../lib/testing';
import { VFIO_PCI_CONFIG_REGION_INDEX as CONFIG, VFIO_PCI_MSI_IRQ_INDEX } from '../../../lib/vfio';

// VFIO_BRIDGE_DEVICES=edu=1234:11e8 npx jest
describeDevice('edu', 'DMA', (device) => {
  test('64 bytes to the device and back, each ending in an MSI', async () => {
    const edu = device(); // bound to vfio-pci if it was not, opened; released after the last test
    const bar0 = edu.device.map(0, 0, 4096);
    const cmd = edu.readConfig(4, 2);
    edu.device.write(CONFIG, 4, 2, cmd | 0x6); // memory decode, bus mastering
    const buf = edu.dmaBuffer(8192); // at IOVA 0x100000, unmapped at release
    const irq = edu.interrupts(VFIO_PCI_MSI_IRQ_INDEX);
    const data = new Uint8Array(64).map((_, i) => i * 3);
    buf.bytes.set(data);

    async function dma(src: number, dst: number, toRam: boolean): Promise<void> {
      const msi = irq.next(0, { timeoutMs: 10_000 }); // asked for before the device can raise it
      bar0.write64(0x80, BigInt(src));
      bar0.write64(0x88, BigInt(dst));
      bar0.write64(0x90, 64n);
      bar0.write64(0x98, toRam ? 0x7n : 0x5n); // start, direction, interrupt when done
      await msi;
      bar0.write32(0x64, bar0.read32(0x24)); // acknowledge
      await waitForRegister(bar0, 0x98, 0, { size: 8, mask: 1, name: 'edu DMA command' });
    }
    await dma(buf.iova, 0x40000, false); // into edu's own buffer
    await dma(0x40000, buf.iova + 4096, true); // and back, a page further
    await waitForBytes(buf.bytes.subarray(4096), data, { timeoutMs: 1000 });

    irq.close();
    edu.device.write(CONFIG, 4, 2, cmd); // leave bus mastering on and release fails: ELEFTBUSY
    bar0.close();
  });
});
