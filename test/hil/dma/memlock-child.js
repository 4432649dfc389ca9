// Run by container.test.ts without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK: maps more guest RAM
// than the limit allows on the backend named (type1 or iommufd) and reports what happened as one
// JSON line.
'use strict';
const path = require('node:path');
const root = path.join(__dirname, '..', '..', '..');
const { GuestRam, openBackend } = require(path.join(root, 'dist'));
const { native } = require(path.join(root, 'dist', 'native'));
const { containerHandle } = require(path.join(root, 'dist', 'vfio', 'container'));
const { iommufdHandle } = require(path.join(root, 'dist', 'vfio', 'iommufd'));

const [bdf, sizeText, backend = 'type1'] = process.argv.slice(2);
const size = Number(sizeText);
const iommu = openBackend(bdf, { backend });
const opened = iommu.openDevice(bdf);
const dma = iommu.dma;
const ram = GuestRam.create(size, { name: 'memlock-test' });
const avail = () => (backend === 'type1' ? dma.iommuInfo().dmaAvail : null);
const out = { backend: dma.kind, before: avail() };
try {
  dma.mapDma({ iova: 0x100000, size, memory: ram });
  out.mapped = true;
} catch (e) {
  out.code = e.code;
  out.errno = e.errno;
  out.hint = e.hint;
  out.message = e.message;
}
out.after = avail();
out.recorded = dma.dmaMappings().length;
// The kernel's view: unmapping the whole range must find nothing there (type1 answers 0 bytes,
// iommufd ENOENT).
if (backend === 'type1') {
  out.kernelUnmapped = native.vfioUnmapDma(containerHandle(dma), 0x100000, size);
} else {
  try {
    out.kernelUnmapped = native.iommufdIoasUnmap(iommufdHandle(dma.iommufd, 'test'), dma.id, 0x100000, size);
  } catch (e) {
    out.kernelUnmapped = e.code === 'ENOENT' ? 0 : e.code;
  }
}
opened.release();
iommu.close();
ram.close();
process.stdout.write(JSON.stringify(out) + '\n');
