// ESM: named imports from the CommonJS entry points, the root and a subpath.
import assert from 'node:assert/strict';

import { MemoryRegion as RootRegion, PAGE_SIZE } from 'vfio-bridge';
import { AddressSpace, MemoryRegion } from 'vfio-bridge/memory';
import { Mapping, memfd } from 'vfio-bridge/vfio';
import { Kvm } from 'vfio-bridge/kvm';

assert.equal(RootRegion, MemoryRegion);
assert.equal(PAGE_SIZE, 4096);
assert.equal(typeof Kvm, 'function');
const root = MemoryRegion.container('root', 0x1000);
root.addSubregion(MemoryRegion.ram('ram', 0x10, new ArrayBuffer(0x10)), 0);
const as = new AddressSpace('memory', root);
as.write(0, 2, 0xbeef);
assert.equal(as.read(0, 2), 0xbeef);
const m = Mapping.fromFd(memfd('pack-test-esm', 4096), 0, 4096);
m.write16(2, 0xf00d);
assert.equal(m.read16(2), 0xf00d);
m.close();
console.log('pack-test: ESM ok');
