'use strict';
// CommonJS: the root and the subpaths are one package (same classes), the memory model works, and
// the addon that loads on first use is the installed prebuild.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const vb = require('vfio-bridge');
const { AddressSpace, MemoryRegion, renderMtree } = require('vfio-bridge/memory');
const { Mapping, memfd, VfioError } = require('vfio-bridge/vfio');
for (const sub of ['pci', 'kvm', 'dma', 'vmm', 'cli', 'testing'])
  assert.ok(Object.keys(require(`vfio-bridge/${sub}`)).length > 0, sub);
assert.equal(vb.MemoryRegion, MemoryRegion);
assert.equal(vb.Mapping, Mapping);

const root = MemoryRegion.container('root', 0x10000);
root.addSubregion(MemoryRegion.ram('ram', 0x100, new ArrayBuffer(0x100)), 0x1000);
const as = new AddressSpace('memory', root);
as.write(0x1004, 4, 0xcafef00d);
assert.equal(as.read(0x1004, 4), 0xcafef00d);
assert.match(renderMtree(as), /ram/);

const fd = memfd('pack-test', 4096);
const m = Mapping.fromFd(fd, 0, 4096);
m.write32(8, 0x12345678);
assert.equal(m.read32(8), 0x12345678);
fs.ftruncateSync(fd, 0);
assert.throws(
  () => m.read8(0),
  (e) => e instanceof VfioError && e.code === 'SIGBUS',
);
m.close();
fs.closeSync(fd);

const pkg = path.dirname(require.resolve('vfio-bridge/package.json'));
const addon = require('node-gyp-build').path(pkg);
assert.equal(path.relative(pkg, addon), path.join('prebuilds', 'linux-x64', 'vfio-bridge.glibc.node'));
console.log('pack-test: CommonJS ok');
