import { Container, Group, VFIO_PCI_CONFIG_REGION_INDEX } from 'vfio-bridge';

using container = Container.open(); // /dev/vfio/vfio, API version checked
using group = Group.openByBdf('0000:00:03.0'); // via /sys/bus/pci/devices/BDF/iommu_group
group.setContainer(container); // not viable: VfioError ENOTVIABLE lists members and drivers
container.setIommu(); // the best of Type1v2, Type1
using dev = group.openDevice('0000:00:03.0');
const vendor = dev.read(VFIO_PCI_CONFIG_REGION_INDEX, 0, 2); // exactly one 2-byte pread
const bar0 = dev.regionInfo(0); // flags, size, offset, caps: sparse-mmap, type, msix-mappable, unknown
using m = dev.map(0, 0, 4096);
m.write32(0x10, 1); // one 32-bit mov
const v = m.read32(0x10);
const big = m.read64(0x18); // bigint; read64Pair/write64Pair avoid the BigInt allocation
const words = m.readBlock(0, 256, 4); // Uint32Array, one 4-byte load per element, one native call
console.log(vendor, bar0.size, v, big, words.length);
