// Interrupt lifetimes on real vfio-pci: the REQ interrupt when someone unbinds the device, ref()
// and unref() deciding whether a process exits, and a worker exiting with interrupts enabled.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { kernelHasCdevs } from '../../../lib/vfio';
import { activeBackend } from '../backends';
import { describePci, openLab } from './lab';
import { settle, until } from './irq-helpers';

// TCG is slow, and a bus reset waits for its link: seconds, not the default five.
jest.setTimeout(60000);

const dist = path.resolve(__dirname, '../../../dist/index.js');

/**
 * Rebinds `bdf` to vfio-pci (its driver_override already says vfio-pci) and waits for its group
 * node, and its cdev where the kernel has them.
 */
async function rebind(bdf: string): Promise<void> {
  const dev = `/sys/bus/pci/devices/${bdf}`;
  if (!fs.existsSync(`${dev}/driver`)) fs.writeFileSync('/sys/bus/pci/drivers_probe', bdf);
  const group = path.basename(fs.readlinkSync(`${dev}/iommu_group`));
  await until(() => fs.existsSync(`/dev/vfio/${group}`), 10000, `/dev/vfio/${group}`);
  if (kernelHasCdevs()) {
    const cdev = (): string[] => (fs.existsSync(`${dev}/vfio-dev`) ? fs.readdirSync(`${dev}/vfio-dev`) : []);
    await until(() => cdev().some((n) => fs.existsSync(`/dev/vfio/devices/${n}`)), 10000, `${bdf}'s cdev`);
  }
}

/** The child program: opens the device, wires MSI with interrupts ref'ed or not, and reports. */
function child(bdf: string, ref: boolean): string {
  return `
const { SystemAddressSpaces, VfioPciDevice } = require(${JSON.stringify(dist)});
const bus = new SystemAddressSpaces();
const dev = VfioPciDevice.openByBdf(bus, ${JSON.stringify(bdf)}, { log: null, backend: ${JSON.stringify(activeBackend())} });
dev.irq.on('interrupt', () => {});
${ref ? '' : 'dev.irq.unref();'}
console.log('wired', dev.irq.mode);
// An unref'ed timer fires only if something else keeps the loop alive: the interrupts.
setTimeout(() => { console.log('kept alive'); bus.close(); }, 500).unref();
`;
}

describePci('edu', 'interrupt lifetimes', (bdfOf) => {
  test('unref()ed interrupts let the process exit; ref()ed ones keep it alive', () => {
    const run = (ref: boolean) =>
      spawnSync(process.execPath, ['-e', child(bdfOf(), ref)], { encoding: 'utf8', timeout: 60000 });
    const free = run(false);
    expect(free.stderr).toBe('');
    expect(free.stdout).toBe('wired intx\n');
    expect(free.status).toBe(0);
    const held = run(true);
    expect(held.stderr).toBe('');
    expect(held.stdout).toBe('wired intx\nkept alive\n');
    expect(held.status).toBe(0);
  }, 60000);

  test('a worker that exits with interrupts enabled leaks no fd', async () => {
    const count = (): number => fs.readdirSync('/proc/self/fd').length;
    const src = `
const { parentPort, workerData } = require('node:worker_threads');
const { SystemAddressSpaces, VfioPciDevice } = require(workerData.dist);
const dev = VfioPciDevice.openByBdf(new SystemAddressSpaces(), workerData.bdf, { log: null, backend: workerData.backend });
dev.irq.on('interrupt', () => {});
dev.configWrite(0x04, 2, 0x0006);
const msi = dev.irq.msi;
dev.configWrite(msi.capOffset + 4, 4, 0xfee00000);
dev.configWrite(msi.dataOffset, 2, 0x4021);
dev.configWrite(msi.capOffset + 2, 2, dev.configRead(msi.capOffset + 2, 2) | 1);
parentPort.postMessage({ mode: dev.irq.mode, fds: dev.irq.host.fds });
// The interrupts keep this worker's loop alive: leave with everything still open.
process.exit(0);
`;
    const before = count();
    for (let i = 0; i < 2; i++) {
      const msgs: { mode: string; fds: number[] }[] = [];
      await new Promise<void>((resolve, reject) => {
        const w = new Worker(src, {
          eval: true,
          workerData: { dist, bdf: bdfOf(), backend: activeBackend() },
        });
        w.on('message', (m) => msgs.push(m));
        w.on('error', reject);
        w.on('exit', () => resolve());
      });
      expect(msgs[0].mode).toBe('msi');
      expect(msgs[0].fds[0]).toBeGreaterThan(2);
    }
    expect(count()).toBe(before);
    // The group (or cdev) was released: it opens again here.
    const lab = openLab(bdfOf(), { log: null });
    lab.close();
  }, 60000);

  test('REQ: unbinding from another process fires the event; closing lets the unbind complete', async () => {
    const bdf = bdfOf();
    const lab = openLab(bdf, { log: null });
    let requests = 0;
    lab.dev.irq.on('req', () => {
      requests++;
      lab.close();
    });
    const unbind = spawn('sh', ['-c', `echo ${bdf} > /sys/bus/pci/devices/${bdf}/driver/unbind`]);
    const status = await new Promise<number | null>((resolve) => unbind.on('exit', resolve));
    try {
      expect(requests).toBe(1);
      expect(lab.dev.closed).toBe(true);
      expect(status).toBe(0);
      expect(fs.existsSync(`/sys/bus/pci/devices/${bdf}/driver`)).toBe(false);
    } finally {
      lab.close();
      await rebind(bdf);
    }
    await settle(10);
    openLab(bdf, { log: null }).close();
  }, 60000);
});
