// vfio-bridge/memory is the memory model alone: it never loads the native addon.
import { AddressSpace, BufferMemory, MemoryRegion, renderMtree, transaction } from 'vfio-bridge/memory';

const mapping = new BufferMemory(0x1000); // stands in for a BAR's Mapping: any FixedWidthMemory
const system = MemoryRegion.container('system', 2 ** 48);
const bar = MemoryRegion.ramDevice('0000:00:03.0 BAR 0 mmaps[0]', 0x1000, mapping); // any FixedWidthMemory
const regs = MemoryRegion.io('msix-table', 0x100, {
  read: (_off, _size) => 0,
  write: (_off, _size, _v) => {},
  valid: { minAccessSize: 4, maxAccessSize: 8 },
  impl: { maxAccessSize: 4 },
});
transaction(() => {
  system.addSubregion(bar, 0xfe000000);
  system.addSubregion(regs, 0xfe000000, 1); // higher priority covers the start of the BAR
});
const mem = new AddressSpace('memory', system);
mem.addMemoryListener({
  regionAdd: (s) => console.log('map', s.region.name, s.addr.toString(16), s.size),
  regionDel: (s) => console.log('unmap', s.region.name, s.addr.toString(16), s.size),
});
mem.guestErrors.on('guest-error', (e) => console.log(e.kind, e.address, e.width, e.write));
mem.write(0xfe000110, 4, 0x1234); // past the table: one 4-byte store into the mapping
console.log(mapping.read32(0x110).toString(16)); // 1234
console.log(renderMtree(mem), renderMtree(mem, { flat: true }));
