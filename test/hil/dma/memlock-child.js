// Run by container.test.ts without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK: maps more guest RAM
// than the limit allows and reports what happened as one JSON line.
'use strict';
const path = require('node:path');
const root = path.join(__dirname, '..', '..', '..');
const { Container, Group, GuestRam } = require(path.join(root, 'dist'));
const { native } = require(path.join(root, 'dist', 'native'));
const { containerHandle } = require(path.join(root, 'dist', 'vfio', 'container'));

const [bdf, sizeText] = process.argv.slice(2);
const size = Number(sizeText);
const container = Container.open();
const group = Group.openByBdf(bdf);
group.setContainer(container);
container.setIommu();
const ram = GuestRam.create(size, { name: 'memlock-test' });
const before = container.iommuInfo().dmaAvail;
const out = { before };
try {
  container.mapDma({ iova: 0x100000, size, memory: ram });
  out.mapped = true;
} catch (e) {
  out.code = e.code;
  out.errno = e.errno;
  out.hint = e.hint;
  out.message = e.message;
}
out.after = container.iommuInfo().dmaAvail;
out.recorded = container.dmaMappings().length;
// The kernel's view: unmapping the whole range must find nothing there.
out.kernelUnmapped = native.vfioUnmapDma(containerHandle(container), 0x100000, size);
group.close();
container.close();
ram.close();
process.stdout.write(JSON.stringify(out) + '\n');
