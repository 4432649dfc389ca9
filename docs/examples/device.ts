import { setTimeout as sleep } from 'node:timers/promises';
import {
  Container,
  Group,
  GuestRam,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
} from 'vfio-bridge';

const bdf = process.argv[2] ?? '0000:00:03.0'; // QEMU's edu device, bound to vfio-pci

// Open: the container, the device's IOMMU group in it, then the device.
using container = Container.open(); // /dev/vfio/vfio
using group = Group.openByBdf(bdf); // /dev/vfio/<group>; EACCES comes with a hint
group.setContainer(container); // ENOTVIABLE names the group's members and their drivers
container.setIommu(); // Type1v2 where the kernel has it
using device = group.openDevice(bdf);

// Config space goes through the device fd: one pread or pwrite of exactly the size asked for.
const cfg = VFIO_PCI_CONFIG_REGION_INDEX;
console.log(`vendor ${device.read(cfg, 0x00, 2).toString(16)}`);
device.write(cfg, 0x04, 2, Number(device.read(cfg, 0x04, 2)) | 0x6); // memory decode, bus master

// Map BAR 0: each load and store is one access of exactly its width.
const bar0 = device.regionInfo(VFIO_PCI_BAR0_REGION_INDEX);
using regs = device.map(VFIO_PCI_BAR0_REGION_INDEX, 0, bar0.size);
console.log(`id ${regs.read32(0x00).toString(16).padStart(8, '0')}`); // edu: 010000ed
regs.write32(0x04, 0x12345678);
console.log(`liveness ${regs.read32(0x04).toString(16)}`); // edu inverts it: edcba987

// A DMA buffer: memfd-backed memory the IOMMU maps at an IOVA of our choosing.
const iova = 0x100000;
using buf = GuestRam.create(2 ** 20);
container.mapDma({ iova, size: buf.length, memory: buf });
new Uint8Array(buf.buffer(0, 256)).fill(0xaa); // what the device reads at IOVA 0x100000

// edu's DMA engine: copy 256 bytes into its own buffer (0x40000), then back to IOVA + 0x1000.
async function eduDma(src: number, dst: number, toRam: boolean): Promise<void> {
  regs.write64(0x80, BigInt(src));
  regs.write64(0x88, BigInt(dst));
  regs.write64(0x90, 256n);
  regs.write64(0x98, toRam ? 3n : 1n); // start, and the direction
  while (regs.read64(0x98) & 1n) await sleep(5); // edu clears the start bit when done
}
await eduDma(iova, 0x40000, false);
await eduDma(0x40000, iova + 0x1000, true);
console.log(`copied back: ${new Uint8Array(buf.buffer(0x1000, 256))[255].toString(16)}`); // aa

// Interrupts: an 'interrupt' event per wake-up, with how many interrupts the eventfd coalesced.
const msi = device.enableIrq(VFIO_PCI_MSI_IRQ_INDEX);
const fired = new Promise<void>((resolve) => {
  msi.on('interrupt', (vector, count) => {
    console.log(`MSI vector ${vector}: ${count}`);
    regs.write32(0x64, regs.read32(0x24)); // acknowledge
    msi.close();
    resolve();
  });
});
regs.write32(0x60, 1); // edu raises an interrupt with status 1
await fired;

// Reset, then close: `using` closes the mapping, device, group and container in reverse order.
container.unmapDma(iova, buf.length);
if (device.info().reset) {
  device.reset(); // VFIO_DEVICE_RESET; decode is off afterwards, so `regs` faults until it is back on
} else {
  // No FLR or PM reset (edu on the root bus): what is left is a bus reset, device.hotReset(),
  // which resets every device device.hotResetInfo() lists, where the kernel offers one.
  console.log('no function reset');
}
