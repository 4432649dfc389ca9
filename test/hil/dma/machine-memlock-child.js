// Run by machine.test.ts without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK: builds a machine with
// more guest RAM than the limit allows, adds a device, and reports what happened as one JSON line.
'use strict';
const path = require('node:path');
const root = path.join(__dirname, '..', '..', '..');
const { Machine } = require(path.join(root, 'dist'));

const [bdf, sizeText, backend = 'type1'] = process.argv.slice(2);
const size = Number(sizeText);
const m = Machine.create({
  ramSize: size,
  pciHole: { start: size, size: 2 ** 32 - size },
  log: null,
  backend,
});
const out = {};
try {
  m.addDevice(bdf, { log: null });
  out.added = true;
} catch (e) {
  out.name = e.name;
  out.code = e.code;
  out.causeCode = e.cause && e.cause.code;
  out.message = e.message;
}
out.devices = m.devices.length;
out.dma = m.dma !== null;
// A refused first device gives its IOMMU context back: a machine without devices holds no VFIO.
out.container = m.container !== null;
out.recorded = m.container === null ? 0 : m.container.dmaMappings().length;
m.close();
process.stdout.write(JSON.stringify(out) + '\n');
