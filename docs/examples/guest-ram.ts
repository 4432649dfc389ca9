import { AddressSpace, GuestRam, MemoryRegion } from 'vfio-bridge';

// 2 MiB of memfd-backed RAM, mapped once; the IOMMU and KVM take the same pages.
using ram = GuestRam.create(2 * 2 ** 20);
const page = ram.view(0x1000, 4096); // a zero-copy DataView: offset and length
page.setUint32(0, 0xfeedface, true);

// Put it on a bus: the memory model reads the same bytes.
const system = MemoryRegion.container('system', 2 ** 32);
system.addSubregion(ram.region('ram'), 0);
using mem = new AddressSpace('memory', system); // disposed first: RAM refuses to close while a space shows it
console.log(mem.read(0x1000, 4).toString(16)); // feedface
console.log(`fd ${ram.fd}, ${ram.length} bytes at host address ${ram.hostAddress.toString(16)}`);
