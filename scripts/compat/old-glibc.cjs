'use strict';
// Run by scripts/compat/old-glibc.sh inside the old Debian, next to the installed tarball: the
// addon on that glibc. Node's own view of the C library must be the suite's (argv[2]) and older
// than 2.34; then every fixed width on a memfd Mapping, GuestRam (the same pages seen through a
// Mapping, and written by a worker thread that attaches them), and the addon is the prebuild.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Worker } = require('node:worker_threads');

const { GuestRam, Mapping, memfd } = require('vfio-bridge');

const expected = process.argv[2];
const glibc = process.report.getReport().header.glibcVersionRuntime;
assert.equal(glibc, expected, `Node runs on glibc ${glibc}, not the suite's ${expected}`);
const [major, minor] = glibc.split('.').map(Number);
assert.ok(major === 2 && minor < 34, `glibc ${glibc} is not older than 2.34`);

// Each width on its own, then read back across widths: little-endian, one access each.
const fd = memfd('old-glibc', 4096);
const m = Mapping.fromFd(fd, 0, 4096);
m.write8(0x10, 0xa5);
assert.equal(m.read8(0x10), 0xa5);
m.write16(0x20, 0xbeef);
assert.equal(m.read16(0x20), 0xbeef);
m.write32(0x30, 0xcafef00d);
assert.equal(m.read32(0x30), 0xcafef00d);
m.write64(0x40, 0x0102030405060708n);
assert.equal(m.read64(0x40), 0x0102030405060708n);
assert.equal(m.read8(0x40), 0x08);
assert.equal(m.read16(0x40), 0x0708);
assert.equal(m.read32(0x44), 0x01020304);
m.writeBlock(0x100, new Uint32Array([1, 2, 3, 4]), 4);
assert.deepEqual([...m.readBlock(0x100, 4, 4)], [1, 2, 3, 4]);
m.close();
fs.closeSync(fd);

// GuestRam: a write through a Mapping of its fd shows in its own view, and a worker thread (its own
// Node environment, so the addon's per-environment state) attaches the same pages and writes them.
const ram = GuestRam.create(2 * 1024 * 1024, { name: 'old-glibc-ram' });
const alias = Mapping.fromFd(ram.fd, 0, 4096);
alias.write32(0x80, 0x12345678);
assert.equal(ram.view(0x80, 4).getUint32(0, true), 0x12345678);
alias.close();

const worker = new Worker(
  `
  const { workerData, parentPort } = require('node:worker_threads');
  const { GuestRam } = require('vfio-bridge');
  const ram = GuestRam.attach(workerData);
  ram.view(0x1000, 4).setUint32(0, 0xfeedface, true);
  ram.close();
  parentPort.postMessage('done');
  `,
  { eval: true, workerData: ram.share() },
);
worker.once('message', (msg) => {
  assert.equal(msg, 'done');
  assert.equal(ram.view(0x1000, 4).getUint32(0, true), 0xfeedface);
  ram.close();

  const pkg = path.dirname(require.resolve('vfio-bridge/package.json'));
  const addon = require('node-gyp-build').path(pkg);
  assert.equal(path.relative(pkg, addon), path.join('prebuilds', 'linux-x64', 'vfio-bridge.glibc.node'));
  console.log(`old-glibc: the prebuild works on glibc ${glibc}: Mapping 8/16/32/64-bit, GuestRam, a worker`);
});
worker.once('error', (e) => {
  throw e;
});
