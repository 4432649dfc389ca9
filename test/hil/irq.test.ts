// VFIO_DEVICE_SET_IRQS on real vfio-pci, below the PCI layer: what the kernel reports and does for
// INTx (automasked, resample eventfd), MSI (not maskable) and MSI-X (subsets, growth in place), on
// a device opened through its group (type1) and through its cdev (iommufd).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

import {
  type DeviceIrq,
  eventfdSignal,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
  VfioError,
} from '../../lib';
import { describeBackends, openOn as openDevice } from './backends';
import { CMD_MEMORY, CONFIG } from './hil';

jest.setTimeout(60000);

function wait(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await wait(5);
  }
}

describeBackends('edu', 'interrupts through VFIO_DEVICE_SET_IRQS', (bdf) => {
  test('the kernel reports INTx automasked and MSI not resizable; MSI cannot be masked', () => {
    const o = openDevice(bdf());
    try {
      expect(o.device.irqInfo(VFIO_PCI_INTX_IRQ_INDEX).flags).toBe(0x7);
      expect(o.device.irqInfo(VFIO_PCI_MSI_IRQ_INDEX).flags).toBe(0x9);
      const msi = o.device.enableIrq(VFIO_PCI_MSI_IRQ_INDEX, {});
      let err: unknown;
      try {
        msi.mask(0);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VfioError);
      expect((err as VfioError).code).toBe('ENOTTY');
      expect((err as VfioError).hint).toMatch(/emulate the mask/);
      msi.close();
    } finally {
      o.close();
    }
  });

  test('INTx: automasked after each interrupt; a write to the resample eventfd unmasks it', async () => {
    const o = openDevice(bdf());
    let irq: DeviceIrq | undefined;
    try {
      const cmd = o.device.read(CONFIG, 4, 2) as number;
      o.device.write(CONFIG, 4, 2, (cmd | CMD_MEMORY) & ~0x400);
      const m = o.device.map(0, 0, 4096);
      const got: number[] = [];
      irq = o.device.enableIrq(VFIO_PCI_INTX_IRQ_INDEX, {
        resample: true,
        onInterrupt: (_v, n) => got.push(n),
      });
      m.write32(0x60, 1);
      await until(() => got.length === 1, 'the first INTx');
      m.write32(0x64, 1);
      m.write32(0x60, 1);
      await wait(300);
      expect(got).toEqual([1]);
      // What KVM's resampler does at the guest's EOI: no syscall of ours, just the eventfd.
      eventfdSignal(irq.resampleFd);
      await until(() => got.length === 2, 'the INTx after the resample');
      m.write32(0x64, 1);
      m.close();
    } finally {
      irq?.close();
      o.close();
    }
  });

  test('REQ is an index of its own', () => {
    const o = openDevice(bdf());
    try {
      const req = o.device.enableIrq(VFIO_PCI_REQ_IRQ_INDEX, { onInterrupt: () => undefined, ref: false });
      expect(req.fds[0]).toBeGreaterThan(2);
      expect(req.hasRef()).toBe(false);
      req.close();
    } finally {
      o.close();
    }
  });
});

describeBackends('e1000e', 'MSI-X vector sets', (bdf) => {
  test('a subset, a software trigger per vector, and growth in place', async () => {
    const o = openDevice(bdf());
    try {
      const info = o.device.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX);
      expect(info.count).toBe(5);
      expect(info.noresize).toBe(false);
      const got: [number, number][] = [];
      const irq = o.device.enableIrq(VFIO_PCI_MSIX_IRQ_INDEX, {
        vectors: 2,
        eventfds: [null, undefined],
        onInterrupt: (v, n) => got.push([v, n]),
      });
      expect(irq.fds[0]).toBe(-1);
      irq.trigger(1);
      await until(() => got.length === 1, 'vector 1');
      const kept = irq.fds[1];
      irq.resize(5);
      expect(irq.fds[1]).toBe(kept);
      irq.trigger(4);
      irq.trigger(1);
      await until(() => got.length === 3, 'vectors 4 and 1');
      expect(got.map(([v]) => v).sort()).toEqual([1, 1, 4]);
      irq.close();
      expect(() => irq.trigger(1)).toThrow(VfioError);
    } finally {
      o.close();
    }
  });
});

describeBackends('e1000e', 'interrupt changes on the thread pool (Device.queueIrqChanges)', (bdf) => {
  test('enable, trigger, grow, refuse and close, in order, none of them at once', async () => {
    const o = openDevice(bdf());
    const refused: unknown[] = [];
    try {
      expect(o.device.irqChanges).toBeNull();
      o.device.queueIrqChanges((e) => refused.push(e));
      const got: [number, number][] = [];
      const irq = o.device.enableIrq(VFIO_PCI_MSIX_IRQ_INDEX, {
        vectors: 2,
        onInterrupt: (v, n) => got.push([v, n]),
      });
      // Made on the thread pool: the enable, then the software trigger queued behind it.
      expect(o.device.irqChanges).not.toBeNull();
      irq.trigger(1);
      await o.device.irqChanges;
      await until(() => got.length === 1, 'vector 1');
      irq.resize(5);
      irq.trigger(4);
      await until(() => got.length === 2, 'vector 4');
      expect(got.map(([v]) => v)).toEqual([1, 4]);
      // A change the kernel refuses reaches onError instead of being thrown: vfio-pci cannot mask
      // an MSI-X vector (ENOTTY), and the trigger queued behind it is still made.
      expect(refused).toEqual([]);
      irq.mask(0);
      irq.trigger(1);
      await o.device.irqChanges;
      expect(refused).toEqual([expect.objectContaining({ code: 'ENOTTY', op: 'VFIO_DEVICE_SET_IRQS' })]);
      expect((refused[0] as Error).message).toMatch(/index 2 start 0 count 1 flags 0x9/);
      await until(() => got.length === 3, 'vector 1 again');
      irq.close();
      expect(o.device.irqChanges).not.toBeNull();
      await o.device.irqChanges;
      expect(o.device.irqChanges).toBeNull();
    } finally {
      o.close();
    }
    // Released in the kernel once its last change was made: the device opens again at once.
    const again = openDevice(bdf());
    try {
      again.device.enableIrq(VFIO_PCI_MSIX_IRQ_INDEX, { vectors: 1 }).close();
    } finally {
      again.close();
    }
  });
});

describeBackends('edu', 'closing a device closes its interrupts', (bdf, backend) => {
  test('an enabled DeviceIrq is closed with its device, so nothing keeps the process alive', () => {
    // In a process of its own: a watcher left running would keep it from ever exiting.
    const root = path.join(__dirname, '..', '..');
    const r = spawnSync(
      process.execPath,
      [
        '-e',
        `const { openBackend, VFIO_PCI_MSI_IRQ_INDEX } = require(${JSON.stringify(path.join(root, 'dist'))});
         const iommu = openBackend(${JSON.stringify(bdf())}, { backend: ${JSON.stringify(backend)} });
         const opened = iommu.openDevice(${JSON.stringify(bdf())});
         const device = opened.device;
         const irq = device.enableIrq(VFIO_PCI_MSI_IRQ_INDEX, { onInterrupt: () => undefined });
         opened.release();
         iommu.close();
         console.log(JSON.stringify({ closed: irq.closed, enabled: irq.enabled }));`,
      ],
      { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' },
    );
    expect({ signal: r.signal, status: r.status, stderr: r.stderr }).toEqual({
      signal: null,
      status: 0,
      stderr: '',
    });
    expect(JSON.parse(r.stdout)).toEqual({ closed: true, enabled: false });
  });
});
