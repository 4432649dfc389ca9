// vfio-bridge/memory is the memory model alone: it never loads the native addon.
import { AddressSpace, MemoryRegion, renderMtree, transaction } from 'vfio-bridge/memory';

// A 64 KiB bus: 16 KiB of RAM, and a device register page that covers part of it.
const system = MemoryRegion.container('system', 0x10000);
const ram = MemoryRegion.ram('ram', 0x4000);
let scratch = 0;
const regs = MemoryRegion.io('regs', 0x1000, {
  read: (off) => (off === 0 ? 0x12345678 : scratch),
  write: (off, _size, value) => {
    if (off === 4) scratch = Number(value);
  },
  valid: { minAccessSize: 4, maxAccessSize: 4 }, // what the device accepts
});

// One transaction: the flat view is rebuilt once, at the end.
transaction(() => {
  system.addSubregion(ram, 0);
  system.addSubregion(regs, 0x3000, 1); // the higher priority wins where they overlap
});

const mem = new AddressSpace('memory', system);
mem.addMemoryListener({ regionAdd: (r) => console.log(`add ${r.region.name} at ${r.addr.toString(16)}`) });
mem.guestErrors.on('guest-error', (e) =>
  console.log(`${e.kind} ${e.write ? 'write' : 'read'} at ${e.address!.toString(16)}: ${e.action}`),
);

mem.write(0x3004, 4, 0xcafe);
console.log(mem.read(0x3000, 4).toString(16), mem.read(0x3004, 4).toString(16)); // 12345678 cafe
mem.read(0x3000, 1); // the device takes only 4-byte accesses: all-ones, an access-invalid-size report
mem.read(0x8000, 4); // nothing there
console.log(renderMtree(mem));
console.log(renderMtree(mem, { flat: true }));
