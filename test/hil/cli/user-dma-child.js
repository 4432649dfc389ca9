// Run by safety.test.ts as a user without root: opens edu through the group node handed to it,
// maps a DMA buffer, runs one edu DMA each way and takes the MSI of each, and prints one JSON line.
'use strict';
const path = require('node:path');
const { Buffer } = require('node:buffer');
const { setTimeout } = require('node:timers');
const root = path.join(__dirname, '..', '..', '..');
const { Container, Group, GuestRam, VFIO_PCI_MSI_IRQ_INDEX } = require(path.join(root, 'dist'));

const [bdf] = process.argv.slice(2);
const IOVA = 0x100000; // below edu's 28-bit DMA mask
const EDU_BUFFER = 0x40000;
const N = 64; // a 4096-byte transfer crashes the lab's QEMU
const out = { uid: process.getuid() };

const wait = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what) {
  const end = Date.now() + 20000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await wait(5);
  }
}

async function main() {
  const container = Container.open();
  const group = Group.openByBdf(bdf);
  group.setContainer(container);
  container.setIommu();
  const device = group.openDevice(bdf);
  const ram = GuestRam.create(64 * 1024, { name: 'user-dma' });
  try {
    try {
      container.mapDma({ iova: IOVA, size: 4096, memory: ram });
    } catch (e) {
      Object.assign(out, { code: e.code, hint: e.hint, message: e.message });
      return;
    }
    const bytes = new Uint8Array(ram.buffer(0, 4096));
    for (let i = 0; i < N; i++) bytes[i] = (i * 7 + 3) & 0xff;
    const cmd = device.read(7, 4, 2);
    device.write(7, 4, 2, cmd | 0x6); // memory decode and bus master
    let interrupts = 0;
    const irq = device.enableIrq(VFIO_PCI_MSI_IRQ_INDEX);
    irq.on('interrupt', (_v, n) => (interrupts += n));
    const m = device.map(0, 0, 4096);
    const dma = async (src, dst, toRam) => {
      const before = interrupts;
      m.write64(0x80, BigInt(src));
      m.write64(0x88, BigInt(dst));
      m.write64(0x90, BigInt(N));
      m.write64(0x98, BigInt(1 | (toRam ? 2 : 0) | 4)); // start, direction, interrupt when done
      await until(() => (m.read64(0x98) & 1n) === 0n, 'the DMA to finish');
      await until(() => interrupts > before, 'the MSI of the DMA');
      m.write32(0x64, m.read32(0x24)); // acknowledge
    };
    await dma(IOVA, EDU_BUFFER, false);
    await dma(EDU_BUFFER, IOVA + 0x800, true);
    out.copied = Buffer.from(bytes.subarray(0x800, 0x800 + N)).equals(Buffer.from(bytes.subarray(0, N)));
    out.interrupts = interrupts;
    m.close();
    irq.close();
  } finally {
    device.close();
    group.close();
    container.close();
    ram.close();
  }
}

main().then(
  () => process.stdout.write(JSON.stringify(out) + '\n'),
  (e) => {
    process.stdout.write(JSON.stringify({ ...out, failed: `${e.code ?? ''} ${e.message}` }) + '\n');
    process.exitCode = 1;
  },
);
