import { Readable, Writable } from 'node:stream';
import {
  createMdev,
  DeviceMigration,
  listMdevParents,
  loadState,
  SystemAddressSpaces,
  removeMdev,
  saveState,
  VfioPciDevice,
} from 'vfio-bridge';

// What the parents offer (here the kernel's mtty sample: a 16550 UART behind a PCI function).
for (const p of listMdevParents()) {
  for (const t of p.types) console.log(`${p.name} ${t.id} (${t.name}): ${t.availableInstances} left`);
}
const a = createMdev('mtty', 'mtty-1'); // ENOSPC, naming what to remove, when the type is full
const b = createMdev('mtty', 'mtty-1');

// Each opens as any vfio-pci device does, by UUID instead of address: through its cdev on iommufd
// where the kernel has one (backend 'auto'), or through its own IOMMU group (type1).
const bus = new SystemAddressSpaces();
const uart = (uuid: string, port: number): VfioPciDevice => {
  const d = VfioPciDevice.openByMdev(bus, uuid);
  d.configWrite(0x10, 4, port); // I/O BAR 0
  d.configWrite(0x04, 2, 0x1); // I/O decode
  return d;
};
const src = uart(a.uuid, 0xc000);
const dst = uart(b.uuid, 0xc100);
bus.pioWrite(0xc000 + 7, 1, 0x5a); // the scratch register
for (const c of 'hi') bus.pioWrite(0xc000, 1, c.charCodeAt(0)); // mtty loops it into its FIFO

// Move src's state into dst: src stops, the state streams across, dst runs on from there.
const from = new DeviceMigration(src);
console.log(from.flags(), from.state, `${from.dataSize()} bytes`); // all three flags, RUNNING, 60 bytes
const chunks: Buffer[] = [];
const sink = new Writable({ write: (c: Buffer, _e, done) => done(void chunks.push(c)) });
await saveState(from, sink, { precopy: true }); // a refused stream resets the target, and says so
await loadState(new DeviceMigration(dst), Readable.from(chunks));
console.log(bus.pioRead(0xc100 + 7, 1).toString(16)); // 5a
console.log(String.fromCharCode(Number(bus.pioRead(0xc100, 1)), Number(bus.pioRead(0xc100, 1)))); // hi

src.close();
dst.close();
bus.close();
await removeMdev(a.uuid); // refused with EBUSY while anything holds the device open
await removeMdev(b.uuid);
