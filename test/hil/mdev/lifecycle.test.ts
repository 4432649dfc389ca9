// mtty's lifecycle on the real mdev core: create, open with the VfioPciDevice stack on either
// backend (its group, or its cdev on iommufd), drive the UART through its I/O BAR, remove; a type with no instance left refused before
// the write (and what the kernel itself answers); removal while the device is open, as the kernel
// does it (the writer waits for the last fd) without blocking this process.
import * as fs from 'node:fs';

import {
  Container,
  createMdev,
  findMdev,
  Group,
  listMdevs,
  mdevType,
  removeMdev,
  type VfioError,
} from '../../../lib/vfio';
import { BACKENDS, describeBackend } from '../backends';
import { describeMtty, drain, makeMtty, openMtty, PARENT, removeAll, strayMdevs, UART } from './mtty';

const made = new Set<string>();
afterAll(() => removeAll(made));

async function rejected(p: Promise<unknown>): Promise<VfioError> {
  try {
    await p;
  } catch (e) {
    return e as VfioError;
  }
  throw new Error('expected a rejection');
}

describeMtty('create, open, use, remove', () => {
  beforeAll(() => expect(strayMdevs()).toEqual([]));

  for (const backend of BACKENDS) {
    describeBackend(backend, 'open, use, remove', () => {
      test('a created instance has a group, opens as a PCI serial device, loops bytes back, and goes', async () => {
        const uuid = makeMtty('mtty-1', made);
        const d = findMdev(uuid)!;
        expect(d).toMatchObject({ parent: PARENT, type: 'mtty-1', driver: 'mtty', removing: false });
        expect(fs.existsSync(`/dev/vfio/${d.iommuGroup}`)).toBe(true);
        console.log(`mtty ${uuid}: group ${d.iommuGroup}, cdev ${d.cdev ?? 'none (no VFIO_DEVICE_CDEV)'}`);

        const m = openMtty(uuid, backend);
        try {
          // Through its group (type1), or through its cdev bound to an iommufd.
          expect([m.pci.backend, m.vfio.backend, m.vfio.path]).toEqual([
            backend,
            backend,
            backend === 'type1' ? `/dev/vfio/${d.iommuGroup}` : d.cdev,
          ]);
          expect(m.pci.bdf).toBe(uuid);
          expect([m.pci.vendorId, m.pci.deviceId]).toEqual([0x4348, 0x3253]);
          expect(m.pci.configRead(0x08, 4) >>> 8).toBe(0x070002); // 16550-compatible serial controller
          expect(m.pci.bars[0]).toMatchObject({ type: 'io', size: 8 });
          expect(m.pci.bars[1]).toBeNull(); // one port: one BAR
          m.out(UART.SCR, 0xa5);
          expect(m.in(UART.SCR)).toBe(0xa5);
          expect(m.in(UART.LSR) & 0x61).toBe(0x60); // empty: transmitter empty, nothing received
          for (const c of 'hello') m.out(UART.TX, c.charCodeAt(0));
          expect(drain(m)).toBe('hello'); // mtty loops what is sent back into its receive FIFO
        } finally {
          m.close();
        }
        const r = await removeMdev(uuid);
        expect(r).toMatchObject({ uuid, parent: PARENT, type: 'mtty-1', heldBy: [] });
        expect(findMdev(uuid)).toBeNull();
        made.delete(uuid);
      });

      test('whenOpen "wait" resolves when the holder closes, timing the wait', async () => {
        const uuid = makeMtty('mtty-1', made);
        const m = openMtty(uuid, backend);
        const removal = removeMdev(uuid, { whenOpen: 'wait' });
        await new Promise((r) => setTimeout(r, 2000)); // the helper starts and writes meanwhile
        m.close();
        const r = await removal;
        expect(r.heldBy.some((h) => h.self)).toBe(true);
        expect(r.ms).toBeGreaterThan(0);
        console.log(`removal waited ${Math.round(r.ms)} ms in the kernel for the fd`);
        expect(findMdev(uuid)).toBeNull();
        made.delete(uuid);
      });
    });
  }

  test('a type with no instance left is refused before the write, naming what to remove', async () => {
    // The two types share mtty's 24 ports: dual-port instances use them up for both.
    const start = mdevType(PARENT, 'mtty-2').availableInstances;
    expect(start).toBeGreaterThan(0);
    for (let i = 0; i < start; i++) makeMtty('mtty-2', made);
    expect(mdevType(PARENT, 'mtty-2').availableInstances).toBe(0);
    expect(mdevType(PARENT, 'mtty-1').availableInstances).toBe(0);
    let e: VfioError | undefined;
    try {
      createMdev(PARENT, 'mtty-1');
    } catch (x) {
      e = x as VfioError;
    }
    expect(e?.code).toBe('ENOSPC');
    expect(e?.message).toBe(
      `mdev type mtty-1 of mtty has no instance left (available_instances is 0); ${start} mediated devices use mtty`,
    );
    expect(e?.hint).toMatch(/^remove one of [0-9a-f-]{36} \(mtty-2\)/);
    // What the kernel answers a write it gets anyway: mtty's init refuses with ENOSPC.
    const create = `/sys/class/mdev_bus/${PARENT}/mdev_supported_types/mtty-1/create`;
    let kernel: NodeJS.ErrnoException | undefined;
    try {
      fs.writeFileSync(create, '0d9c2b7e-6d1e-4c59-9d4e-7c2f2b0a9f11');
    } catch (x) {
      kernel = x as NodeJS.ErrnoException;
    }
    expect(kernel?.code).toBe('ENOSPC');
    const t0 = performance.now();
    await removeAll(made);
    made.clear();
    console.log(`removed ${start} dual-port mttys in ${Math.round(performance.now() - t0)} ms`);
    expect(mdevType(PARENT, 'mtty-2').availableInstances).toBe(start);
  });

  test('removal while open: refused by default; waited for, it completes when the fd closes', async () => {
    const uuid = makeMtty('mtty-1', made);
    const group = findMdev(uuid)!.iommuGroup!;
    const container = Container.open();
    const g = Group.openByMdev(uuid);
    g.setContainer(container);
    container.setIommu();
    const device = g.openDevice(uuid);
    try {
      const busy = await rejected(removeMdev(uuid));
      expect(busy.code).toBe('EBUSY');
      expect(busy.message).toContain(`holds /dev/vfio/${group}`);
      expect(busy.message).toContain('this process');

      // The kernel holds the writer until the fd closes: at the deadline the removal is pending,
      // and this process went on all along.
      const ticks: number[] = [];
      const timer = setInterval(() => ticks.push(performance.now()), 20);
      const pending = await rejected(removeMdev(uuid, { whenOpen: 'wait', timeoutMs: 1500 }));
      clearInterval(timer);
      expect(pending.code).toBe('EPENDING');
      expect(ticks.length).toBeGreaterThan(20); // the event loop ran while the kernel waited
      // Off the mdev bus and without `remove`, but still there: the removal cannot be undone.
      expect(findMdev(uuid)?.removing).toBe(true);
      expect(listMdevs().find((x) => x.uuid === uuid)?.removing).toBe(true);
      // The open device still answers meanwhile.
      expect(device.read(7, 0, 2)).toBe(0x4348);
      const again = await rejected(removeMdev(uuid));
      expect(again.code).toBe('EALREADY');
    } finally {
      const closedAt = performance.now();
      device.close();
      g.close();
      container.close();
      // The helper's write returns once the last fd is closed, and the device goes.
      while (findMdev(uuid) !== null && performance.now() - closedAt < 30_000) {
        await new Promise((r) => setTimeout(r, 20));
      }
      console.log(`device gone ${Math.round(performance.now() - closedAt)} ms after its fd closed`);
    }
    expect(findMdev(uuid)).toBeNull();
    made.delete(uuid);
  });
});
