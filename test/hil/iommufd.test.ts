// iommufd and the VFIO device cdev on real vfio-pci (the lab's own kernel: IOMMUFD,
// VFIO_DEVICE_CDEV and VFIO_CONTAINER together): the IOVA ranges an IOAS reports as devices come and
// go, the exact record against the kernel's own view (never-mapped and split unmaps refused there
// too), a device opened through its cdev with no group opened, doing DMA into an IOAS, the IOMMU's
// hardware info, a page table of our own; and, on any kernel, what the backend choice says.
import * as fs from 'node:fs';

import {
  chooseBackend,
  Group,
  GuestRam,
  Iommufd,
  openCdevDevice,
  VFIO_PCI_BAR0_REGION_INDEX,
  type Device,
  type Ioas,
} from '../../lib';
import { native } from '../../lib/native';
import { DMA_HANDLE } from '../../lib/vfio/dma-types';
import { iommufdHandle } from '../../lib/vfio/iommufd';
import { cli, validJson } from '../support/cli-harness';
import { describeBackend, iommufdMissing, vfioNodeFds } from './backends';
import { eduDmaMapped } from './dma/edu-dma';
import { caught, CMD_BUS_MASTER, CMD_MEMORY, CONFIG, describeDevice } from './hil';

jest.setTimeout(60_000);

describeDevice('edu', 'iommufd on real vfio-pci', (bdf) => {
  describeBackend('iommufd', 'IOAS and device cdev', () => {
    let fd: Iommufd;
    let ioas: Ioas;
    let device: Device | undefined;
    let ram: GuestRam;
    beforeEach(() => {
      fd = Iommufd.open();
      ioas = fd.allocIoas();
      ram = GuestRam.create(2 ** 20, { name: 'iommufd-ram' });
    });
    afterEach(() => {
      device?.close();
      device = undefined;
      fd?.close();
      ram?.close();
    });

    test('the IOVA ranges: everything while empty, the MSI window reserved once edu attaches, back after', () => {
      const empty = ioas.iovaRanges();
      expect(empty.ranges).toHaveLength(1);
      expect(empty.ranges[0].start).toBe(0n);
      device = openCdevDevice(bdf(), fd);
      const hwpt = ioas.attach(device);
      expect(hwpt).toBeGreaterThan(0);
      const attached = ioas.iovaRanges();
      expect(attached.alignment).toBe(4096);
      expect(attached.ranges[0]).toEqual({ start: 0n, end: 0xfedfffffn });
      expect(attached.ranges[1].start).toBe(0xfef00000n);
      expect(attached.ranges[attached.ranges.length - 1].end).toBeGreaterThan(0xffffffffn);
      expect(ioas.iommuInfo()).toMatchObject({ minPageSize: 4096, iovaAlignment: 4096 });
      // What the record checks against is the narrowed list.
      expect(caught(() => ioas.mapDma({ iova: 0xfee00000, size: 0x1000, memory: ram })).code).toBe(
        'EIOVARANGE',
      );
      ioas.detach(device);
      expect(ioas.iovaRanges().ranges).toEqual(empty.ranges);
    });

    test('map and unmap keep the exact record, and the kernel agrees: never-mapped and split unmaps fail there too', () => {
      device = openCdevDevice(bdf(), fd);
      ioas.attach(device);
      const h = iommufdHandle(fd, 'test');
      ioas.mapDma({ iova: 0x100000, size: 0x10000, memory: ram });
      ioas.mapDma({ iova: 0x110000, size: 0x4000, memory: ram, offset: 0x10000, write: false });
      expect(ioas.dmaMappings().map((m) => [m.iova, m.size, m.offset, m.write])).toEqual([
        [0x100000, 0x10000, 0, true],
        [0x110000, 0x4000, 0x10000, false],
      ]);
      // The record refuses before the kernel ...
      expect(caught(() => ioas.unmapDma(0x200000, 0x1000)).code).toBe('ENOTMAPPED');
      expect(caught(() => ioas.unmapDma(0x100000, 0x8000)).code).toBe('ENOTMAPPED');
      // ... and the kernel, asked directly, says the same: nothing there, and no splitting.
      expect(caught(() => native.iommufdIoasUnmap(h, ioas.id, 0x200000, 0x1000)).code).toBe('ENOENT');
      expect(caught(() => native.iommufdIoasUnmap(h, ioas.id, 0x100000, 0x8000)).code).toBe('ENOENT');
      // A fixed IOVA already in use is the kernel's EEXIST, which the record never lets through.
      expect(
        caught(() => native.iommufdIoasMap(h, ioas.id, ram[DMA_HANDLE](), 0, 0x104000, 0x1000, true, true))
          .code,
      ).toBe('EEXIST');
      expect(ioas.unmapDma(0x100000, 0x14000)).toBe(0x14000);
      expect([ioas.dmaMappings(), ioas.dmaMappedBytes]).toEqual([[], 0]);
      expect(caught(() => native.iommufdIoasUnmap(h, ioas.id, 0x100000, 0x14000)).code).toBe('ENOENT');
    });

    test('a device opened through its cdev, no group opened: regions, config, a BAR, and DMA into the IOAS', async () => {
      device = openCdevDevice(bdf(), fd);
      expect([device.backend, device.iommufdDevId! > 0]).toEqual(['iommufd', true]);
      const nodes = vfioNodeFds();
      expect(nodes).toContain('/dev/iommu');
      expect(nodes).toContain(device.path);
      expect(device.path).toMatch(/^\/dev\/vfio\/devices\/vfio\d+$/);
      expect(nodes.filter((n) => /^\/dev\/vfio\/(\d+|vfio)$/.test(n))).toEqual([]);
      // While the cdev is open, the group cannot be: a device goes through one or the other.
      expect(caught(() => Group.openByBdf(bdf())).code).toBe('EBUSY');
      ioas.attach(device);
      expect(device.read(CONFIG, 0, 2)).toBe(0x1234);
      const cmd = device.read(CONFIG, 4, 2) as number;
      device.write(CONFIG, 4, 2, cmd | CMD_MEMORY | CMD_BUS_MASTER);
      using bar0 = device.map(VFIO_PCI_BAR0_REGION_INDEX, 0, 4096);
      expect(bar0.read32(0)).toBe(0x010000ed);
      ioas.mapDma({ iova: 0x100000, size: 2 ** 20, memory: ram });
      const bytes = new Uint8Array(ram.buffer(0, 2 ** 20));
      for (let i = 0; i < 256; i++) bytes[i] = (i * 7 + 3) & 0xff;
      await eduDmaMapped(bar0, 0x100000, 256, false);
      await eduDmaMapped(bar0, 0x100000 + 0x8000, 256, true);
      expect(bytes.subarray(0x8000, 0x8100)).toEqual(bytes.subarray(0, 256));
      device.write(CONFIG, 4, 2, cmd);
    });

    test("the IOMMU's hardware info, and a page table of our own to attach through", () => {
      device = openCdevDevice(bdf(), fd);
      const info = fd.hwInfo(device.iommufdDevId!);
      expect(info.typeName).toBe('intel-vtd');
      expect(info.vtd!.capReg).not.toBe(0n);
      const hwpt = ioas.allocHwpt(device);
      expect(hwpt.attach(device)).toBe(hwpt.id);
      ioas.mapDma({ iova: 0x100000, size: 0x1000, memory: ram });
      // The page table holds the IOAS: destroying either fails while in use.
      expect(caught(() => hwpt.close()).code).toBe('EBUSY');
      ioas.detach(device);
      hwpt.close();
      expect(hwpt.closed).toBe(true);
      const again = ioas.allocHwpt(device);
      again.close();
      expect(ioas.unmapDma(0x100000, 0x1000)).toBe(0x1000);
    });

    test('closing the device detaches it, and the IOAS can then be destroyed', () => {
      device = openCdevDevice(bdf(), fd);
      ioas.attach(device);
      ioas.mapDma({ iova: 0x100000, size: 0x1000, memory: ram });
      device.close();
      expect(ioas.attachedDevices()).toEqual([]);
      ioas.close();
      expect(ioas.closed).toBe(true);
      expect(fs.existsSync(`/sys/bus/pci/devices/${bdf()}/vfio-dev`)).toBe(true);
    });
  });

  // Runs on every kernel: what the choice says is the kernel's to decide, and both answers are checked.
  test('the backend choice says what the running kernel offers, and an override it cannot honour names why', async () => {
    const missing = iommufdMissing();
    const auto = chooseBackend(bdf());
    const r = await cli(['info', '--json', bdf()], { ...process.env });
    expect(r.code).toBe(0);
    const j = validJson('info', r.stdout) as {
      backend: { kind: string; opened: boolean; cdev: string | null };
    };
    if (missing === null) {
      expect(auto).toMatchObject({
        backend: 'iommufd',
        requested: 'auto',
        cdev: { path: expect.stringMatching(/^\/dev\/vfio\/devices\/vfio\d+$/) },
      });
      expect(j.backend).toMatchObject({ kind: 'iommufd', opened: true, cdev: auto.cdev!.path });
      expect(chooseBackend(bdf(), 'type1').backend).toBe('type1');
      const t = await cli(['info', '--json', '--backend', 'type1', bdf()], { ...process.env });
      expect((validJson('info', t.stdout) as { backend: { kind: string } }).backend.kind).toBe('type1');
    } else {
      expect(auto.backend).toBe('type1');
      expect(auto.iommufdUnavailable).toMatch(/\/dev\/iommu|VFIO_DEVICE_CDEV/);
      expect(j.backend).toMatchObject({ kind: 'type1', opened: true, cdev: null });
      const e = caught(() => chooseBackend(bdf(), 'iommufd'));
      expect(['ENOIOMMUFD', 'ENOCDEV']).toContain(e.code);
      const f = await cli(['info', '--backend', 'iommufd', bdf()], { ...process.env });
      expect(f.code).toBe(1);
      expect(f.stderr).toMatch(/\[(ENOIOMMUFD|ENOCDEV)\]/);
    }
  });
});
