// vfio-bridge/testing on real vfio-pci: a test written with the helpers drives an edu DMA transfer
// and awaits its MSI; a test that leaves bus mastering on fails its release; a device on a kernel
// driver is bound for the test and put back; a missing role skips, or fails where required.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { VFIO_PCI_MSI_IRQ_INDEX } from '../../../lib/vfio';
import {
  acquire,
  describeDevice,
  LeftBusyError,
  probeDevice,
  tryAcquire,
  waitForBytes,
  waitForRegister,
} from '../../../lib/testing';

const CONFIG = 7;
const CMD_MEMORY = 1 << 1;
const CMD_BUS_MASTER = 1 << 2;
/** edu's registers (QEMU docs/specs/edu.rst) and its DMA buffer in its own address space. */
const EDU = { status: 0x24, ack: 0x64, src: 0x80, dst: 0x88, count: 0x90, cmd: 0x98, buffer: 0x40000 };
const DMA_START = 1;
const DMA_TO_RAM = 2;
const DMA_IRQ = 4;

describeDevice('edu', 'a DMA transfer written with the helpers', (device) => {
  test('64 bytes to edu and back, each awaited by its MSI, then the device left idle', async () => {
    const edu = device();
    const bar0 = edu.device.map(0, 0, 4096);
    const cmd = edu.readConfig(4, 2);
    edu.device.write(CONFIG, 4, 2, cmd | CMD_MEMORY | CMD_BUS_MASTER);
    const buf = edu.dmaBuffer(8192);
    expect(buf.iova).toBe(0x100000); // below edu's 28-bit DMA mask
    const data = Uint8Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff);
    buf.bytes.set(data);
    const irq = edu.interrupts(VFIO_PCI_MSI_IRQ_INDEX);

    const transfer = async (src: number, dst: number, toRam: boolean): Promise<void> => {
      const msi = irq.next(0, { timeoutMs: 30_000 });
      bar0.write64(EDU.src, BigInt(src));
      bar0.write64(EDU.dst, BigInt(dst));
      bar0.write64(EDU.count, 64n);
      bar0.write64(EDU.cmd, BigInt(DMA_START | DMA_IRQ | (toRam ? DMA_TO_RAM : 0)));
      await msi;
      bar0.write32(EDU.ack, bar0.read32(EDU.status));
      await waitForRegister(bar0, EDU.cmd, 0, {
        size: 8,
        mask: DMA_START,
        name: 'edu DMA command',
        timeoutMs: 30_000,
      });
    };
    await transfer(buf.iova, EDU.buffer, false);
    await transfer(EDU.buffer, buf.iova + 4096, true);
    await expect(waitForBytes(buf.bytes.subarray(4096), data, { timeoutMs: 1000 })).resolves.toBeDefined();
    expect(irq.count(0)).toBe(2);

    irq.close();
    edu.device.write(CONFIG, 4, 2, cmd & ~CMD_BUS_MASTER);
    bar0.close();
    expect(edu.leftBusy()).toEqual([]);
  });
});

describeDevice(
  'edu',
  'acquired by vendor:device',
  (device) => {
    test('1234:11e8 is the first edu by address', () => {
      expect(probeDevice('edu')).toMatchObject({ bdf: device().bdf });
      expect(device().bdf).toBe(process.env.VFIO_BRIDGE_HIL_DEVICES!.match(/edu=([^,]+)/)![1]);
    });
  },
  { devices: { edu: '1234:11e8' } },
);

describeDevice('edu', 'release after a test that leaves bus mastering on', (device) => {
  test('fails with ELEFTBUSY naming the device and the register', async () => {
    const edu = device();
    const cmd = edu.readConfig(4, 2);
    edu.device.write(CONFIG, 4, 2, cmd | CMD_BUS_MASTER);
    const e = await edu.release().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(LeftBusyError);
    expect(e).toMatchObject({
      code: 'ELEFTBUSY',
      bdf: edu.bdf,
      findings: [{ register: 'PCI_COMMAND', offset: 4 }],
    });
    expect((e as Error).message).toMatch(
      new RegExp(
        `^edu \\(${edu.bdf.replace('.', '\\.')}\\) was left busy: bus mastering is on \\(bit 2\\): PCI_COMMAND at 0x04 reads 0x0*[0-9a-f]*[4-7]$`,
      ),
    );
    // Released all the same: the group opens again.
    const again = await acquire('edu');
    expect(again.leftBusy()).toEqual([]);
    await again.release();
  });
});

const kernelNic = /e1000=([^,]+)/.exec(process.env.VFIO_BRIDGE_HIL_KERNEL_DEVICES ?? '')?.[1];
(kernelNic ? describe : describe.skip)('a device on a kernel driver', () => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vb-testing-'));
  afterAll(() => fs.rmSync(stateDir, { recursive: true, force: true }));

  test('is bound to vfio-pci with the CLI for the test and put back on its driver at release', async () => {
    const driver = () => path.basename(fs.readlinkSync(`/sys/bus/pci/devices/${kernelNic}/driver`));
    expect(driver()).toBe('e1000');
    const r = await tryAcquire('nic', {
      devices: { nic: kernelNic! },
      stateFile: path.join(stateDir, 'drivers.json'),
    });
    if (r.skip !== undefined) throw new Error(r.skip);
    try {
      expect(r.device.boundFrom).toBe('e1000');
      expect(driver()).toBe('vfio-pci');
      expect(r.device.readConfig(0, 2)).toBe(0x8086);
    } finally {
      await r.device.release();
    }
    expect(driver()).toBe('e1000');
  });
});

describe('a role the lab does not provide', () => {
  const child = path.join(__dirname, 'missing-role-child.js');
  const run = (extra: NodeJS.ProcessEnv) =>
    spawnSync(process.execPath, [child], {
      encoding: 'utf8',
      env: { ...process.env, CI: '', VFIO_BRIDGE_DEVICES_REQUIRED: '', ...extra },
      timeout: 120_000,
    });

  test('skips with its reason', () => {
    const r = run({});
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/# SKIP no device plays role missing: set VFIO_BRIDGE_DEVICES/);
  });

  test('fails where devices are required', () => {
    const r = run({ VFIO_BRIDGE_DEVICES_REQUIRED: '1' });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/not ok .* missing: has its device \(required here\)/);
    expect(r.stdout).toMatch(/devices are required here \(CI=true or VFIO_BRIDGE_DEVICES_REQUIRED=1\)/);
  });
});
