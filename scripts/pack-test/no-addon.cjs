'use strict';
// The installed package with its addon gone (prebuilds/ deleted, PREBUILDS_ONLY=1): the memory
// model works, every entry point imports, and the first native call fails with one clear line.
const assert = require('node:assert/strict');

const { AddressSpace, MemoryRegion } = require('vfio-bridge/memory');
const root = MemoryRegion.container('root', 0x1000);
root.addSubregion(MemoryRegion.ram('ram', 0x10, new ArrayBuffer(0x10)), 0);
const as = new AddressSpace('memory', root);
as.write(0, 4, 0x01020304);
assert.equal(as.read(0, 4), 0x01020304);

const vb = require('vfio-bridge');
for (const sub of ['pci', 'vfio', 'kvm', 'dma', 'vmm', 'cli', 'testing']) require(`vfio-bridge/${sub}`);
assert.throws(
  () => vb.memfd('no-addon', 4096),
  (e) =>
    e.code === 'ERR_VFIO_BRIDGE_NO_ADDON' &&
    /^vfio-bridge: cannot load its native addon \(No native build was found/.test(e.message) &&
    !e.message.includes('\n'),
);
console.log('pack-test: without the addon ok');
