import * as fs from 'node:fs';

import { describeDevice, pollUntil, waitForRegister } from 'vfio-bridge/testing';
import { VFIO_PCI_CONFIG_REGION_INDEX as CONFIG } from 'vfio-bridge/vfio';

// In the lab:  npx vfio-bridge lab --device nvme -- npx jest nvme.test.ts
// On a host:   VFIO_BRIDGE_DEVICES=nvme=class:010802 npx jest nvme.test.ts
// VFIO_BRIDGE_HIL_NVME_FILE names what the namespace holds (the lab sets it to the backing file);
// without it the read is checked to complete, not compared.
const PAGE = 4096;
const DEPTH = 16; // entries per queue

/** A submission queue and its completion queue, by their pages in the DMA buffer. */
interface Queue {
  id: number;
  sq: number;
  cq: number;
  tail: number;
  head: number;
  phase: number;
}

describeDevice('nvme', 'NVMe', (device) => {
  test('identify, one I/O queue pair, a read', async () => {
    const nvme = device();
    const bar0 = nvme.device.map(0, 0, 2 * PAGE); // registers, then the doorbells
    const cmd = nvme.readConfig(4, 2);
    nvme.device.write(CONFIG, 4, 2, cmd | 0x6); // memory decode, bus mastering
    const mem = nvme.dmaBuffer(6 * PAGE); // admin SQ, admin CQ, identify, I/O SQ, I/O CQ, data
    const iova = (page: number) => BigInt(mem.iova + page * PAGE);
    const cap = bar0.read64(0);
    const stride = 4 << Number((cap >> 32n) & 0xfn); // CAP.DSTRD
    const timeoutMs = 500 * Number((cap >> 24n) & 0xffn) + 1000; // CAP.TO
    const ready = (on: number) => waitForRegister(bar0, 0x1c, on, { mask: 1, name: 'CSTS.RDY', timeoutMs });

    bar0.write32(0x14, 0); // CC.EN off: the controller resets
    await ready(0);
    bar0.write32(0x24, ((DEPTH - 1) << 16) | (DEPTH - 1)); // AQA
    bar0.write64(0x28, iova(0)); // ASQ
    bar0.write64(0x30, iova(1)); // ACQ
    bar0.write32(0x14, (4 << 20) | (6 << 16) | 1); // 16-byte completions, 64-byte commands, 4 KiB pages, on
    await ready(1);

    // One command: written at the tail, the doorbell rung, its completion polled for by phase.
    async function submit(q: Queue, opcode: number, nsid: number, page: number, ...dw: number[]) {
      const at = q.sq * PAGE + q.tail * 64;
      mem.bytes.fill(0, at, at + 64);
      const sqe = mem.view(at, 64);
      sqe.setUint32(0, opcode | (q.tail << 16), true); // the command id is the slot
      sqe.setUint32(4, nsid, true);
      sqe.setBigUint64(24, iova(page), true); // PRP1: one page
      dw.forEach((v, i) => sqe.setUint32(40 + 4 * i, v, true)); // CDW10...
      q.tail = (q.tail + 1) % DEPTH;
      bar0.write32(0x1000 + 2 * q.id * stride, q.tail);
      const cqe = mem.view(q.cq * PAGE + q.head * 16, 16);
      const flags = await pollUntil(
        `a completion on queue ${q.id}`,
        () => cqe.getUint16(14, true),
        (v) => (v & 1) === q.phase,
        (v) => `0x${v.toString(16)}`,
      );
      q.head = (q.head + 1) % DEPTH;
      if (q.head === 0) q.phase ^= 1;
      bar0.write32(0x1000 + (2 * q.id + 1) * stride, q.head);
      return flags >> 1; // the status: 0 is success
    }
    const admin: Queue = { id: 0, sq: 0, cq: 1, tail: 0, head: 0, phase: 1 };
    const io: Queue = { id: 1, sq: 3, cq: 4, tail: 0, head: 0, phase: 1 };
    const page = mem.view(2 * PAGE, PAGE);

    expect(await submit(admin, 0x06, 0, 2, 1)).toBe(0); // Identify Controller
    expect(page.getUint16(0, true)).toBe(nvme.readConfig(0, 2)); // VID: the PCI vendor
    expect(page.getUint32(516, true)).toBeGreaterThanOrEqual(1); // namespaces
    expect(await submit(admin, 0x06, 1, 2, 0)).toBe(0); // Identify Namespace 1
    const blocks = Number(page.getBigUint64(0, true));
    const blockSize = 1 << page.getUint8(128 + 4 * (page.getUint8(26) & 0xf) + 2); // LBADS of FLBAS

    expect(await submit(admin, 0x05, 0, 4, ((DEPTH - 1) << 16) | 1, 1)).toBe(0); // I/O CQ 1, polled
    expect(await submit(admin, 0x01, 0, 3, ((DEPTH - 1) << 16) | 1, (1 << 16) | 1)).toBe(0); // I/O SQ 1
    const first = 1;
    const count = PAGE / blockSize;
    expect(blocks).toBeGreaterThanOrEqual(first + count);
    expect(await submit(io, 0x02, 1, 5, first, 0, count - 1)).toBe(0); // READ one page from block 1
    const image = process.env.VFIO_BRIDGE_HIL_NVME_FILE;
    if (image) {
      const want = fs.readFileSync(image).subarray(first * blockSize, first * blockSize + PAGE);
      expect(Buffer.from(mem.bytes.subarray(5 * PAGE, 6 * PAGE)).equals(want)).toBe(true);
    }

    expect(await submit(admin, 0x00, 0, 0, 1)).toBe(0); // delete I/O SQ 1
    expect(await submit(admin, 0x04, 0, 0, 1)).toBe(0); // delete I/O CQ 1
    bar0.write32(0x14, 0); // CC.EN off: no more DMA
    await ready(0);
    nvme.device.write(CONFIG, 4, 2, cmd); // bus mastering off again, or release fails
    bar0.close();
  });
});
