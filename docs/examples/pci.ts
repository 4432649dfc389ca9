import { SystemAddressSpaces, VfioPciDevice } from 'vfio-bridge';

const bus = new SystemAddressSpaces(); // memory 2^48, I/O 64 KiB, 4 KiB pages
const dev = VfioPciDevice.openByBdf(bus, '0000:00:05.0'); // or VfioPciDevice.open(bus, device, opts)
dev.configWrite(0x1c, 4, 0xfebf0000); // the guest programs BAR 3 ...
dev.configWrite(0x04, 2, 0x0007); // ... and enables decode
const v = bus.dispatch('memory', 0xfebf0100, 4, false); // an MMIO exit: returns the value read
bus.dispatch('io', 0xc000, 2, true, 0x1234); // a port write
console.log(v, dev.mapinfo()); // [{ addr, size, name, mapinfo, bar, barOffset }, ...]
console.log(bus.mtree('memory', { flat: true })); // info mtree -f with a mapinfo column
console.log(dev.dump(3, 0, 0x40)); // xp-style dump through the guest's dispatch path
dev.close();
