// mtty through its cdev on iommufd (the lab's own kernel): bound to an iommufd and attached to an
// IOAS as an access (mtty sits behind no IOMMU: no page table is made, and its parent would pin
// pages through the IOAS), what that asks of the IOAS (page alignment from the attach on), DMA
// mappings made before and while it is attached, a page table refused before the ioctl, removal
// refused while the cdev is open, and an mtty beside a PCI function in one IOAS, where the
// function's DMA goes on through the IOAS the access shares.

import {
  findMdev,
  Group,
  GuestRam,
  Iommufd,
  IommufdBackend,
  openCdevDevice,
  removeMdev,
  VFIO_PCI_BAR0_REGION_INDEX,
  VfioError,
  type Device,
} from '../../../lib';
import { cli, validJson } from '../../support/cli-harness';
import { BACKENDS, describeBackend, iommufdMissing, vfioNodeFds } from '../backends';
import { caught, CMD_BUS_MASTER, CMD_MEMORY, CONFIG, describeDevice } from '../hil';
import { eduDmaMapped } from '../dma/edu-dma';
import { describeMtty, makeMtty, removeAll } from './mtty';

jest.setTimeout(60_000);

const made = new Set<string>();
afterAll(() => removeAll(made));

const MIB = 2 ** 20;

async function rejected(p: Promise<unknown>): Promise<VfioError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof VfioError) return e;
    throw e;
  }
  throw new Error('expected a rejection');
}

describeMtty('through its cdev on iommufd', () => {
  describeBackend('iommufd', 'an mtty as an IOAS access', () => {
    let fd: Iommufd;
    let device: Device | null = null;
    beforeEach(() => {
      fd = Iommufd.open();
    });
    afterEach(() => {
      device?.close();
      device = null;
      fd.close();
    });

    test('binds, attaches with no page table, makes the IOAS page-aligned, and maps DMA before and while attached', () => {
      const uuid = makeMtty('mtty-1', made);
      const cdev = findMdev(uuid)!.cdev;
      expect(cdev).toMatch(/^\/dev\/vfio\/devices\/vfio\d+$/);
      const ioas = fd.allocIoas();
      const free = ioas.iovaRanges();
      expect(free.alignment).toBe(1); // nothing attached: any IOVA
      using ram = GuestRam.create(2 * MIB);
      ioas.mapDma({ iova: 0x100000, size: MIB, memory: ram });

      device = openCdevDevice(uuid, fd);
      expect([device.bdf, device.backend, device.path, device.iommufdDevId! > 0]).toEqual([
        uuid,
        'iommufd',
        cdev,
        true,
      ]);
      const nodes = vfioNodeFds();
      expect(nodes).toContain(cdev);
      expect(nodes.filter((n) => /^\/dev\/vfio\/(\d+|vfio)$/.test(n))).toEqual([]);
      // While the cdev is open its group cannot be: the device goes through one or the other.
      expect(caught(() => Group.openByMdev(uuid)).code).toBe('EBUSY');

      // The kernel attaches an emulated device to the IOAS itself and hands back the IOAS's ID.
      expect(ioas.attach(device)).toBe(ioas.id);
      expect(ioas.attachedDevices()).toEqual([device]);
      // An access pins whole pages: the IOAS takes a page alignment, and no reserved region.
      const attached = ioas.iovaRanges();
      expect(attached).toEqual({ ...free, alignment: 4096 });
      expect(ioas.iommuInfo().iovaAlignment).toBe(4096);
      // Mappings while attached, read-write and read-only, go in and out; the earlier one stays.
      ioas.mapDma({ iova: 0x200000, size: 0x10000, memory: ram, offset: MIB });
      ioas.mapDma({ iova: 0x300000, size: 0x1000, memory: ram, offset: MIB + 0x10000, write: false });
      expect(ioas.dmaMappings().map((m) => [m.iova, m.size, m.write])).toEqual([
        [0x100000, MIB, true],
        [0x200000, 0x10000, true],
        [0x300000, 0x1000, false],
      ]);
      expect(ioas.unmapDma(0x200000, 0x10000)).toBe(0x10000);
      expect(ioas.unmapDma(0x300000, 0x1000)).toBe(0x1000);
      // The device works as one opened through its group: config space, mtty's IDs.
      expect(device.read(CONFIG, 0, 4)).toBe(0x32534348);

      // Detached, the IOAS is back to any alignment; attached again, the same ID.
      ioas.detach(device);
      expect(ioas.iovaRanges().alignment).toBe(1);
      expect(ioas.attach(device)).toBe(ioas.id);
      device.close();
      device = null;
      expect(ioas.iovaRanges().alignment).toBe(1); // closing the cdev detached it
      expect(ioas.unmapDma(0x100000, MIB)).toBe(MIB);
    });

    test('a page table for it is refused before the ioctl; the kernel has no IOMMU info for it', () => {
      const uuid = makeMtty('mtty-1', made);
      const ioas = fd.allocIoas();
      device = openCdevDevice(uuid, fd);
      const e = caught(() => ioas.allocHwpt(device!));
      expect([e.code, e.op, e.bdf]).toEqual(['ENOHWPT', 'IOMMU_HWPT_ALLOC', uuid]);
      expect(e.hint).toMatch(/ioas\.attach\(device\)/);
      // The ID the bind returned names an access, not a device with an IOMMU behind it.
      expect(caught(() => fd.hwInfo(device!.iommufdDevId!)).code).toBe('ENOENT');
      expect(ioas.attach(device)).toBe(ioas.id);
    });

    test('removal is refused while the cdev is open, naming it', async () => {
      const uuid = makeMtty('mtty-1', made);
      const cdev = findMdev(uuid)!.cdev!;
      device = openCdevDevice(uuid, fd);
      const busy = await rejected(removeMdev(uuid));
      expect(busy.code).toBe('EBUSY');
      expect(busy.message).toContain(`holds ${cdev}`);
      device.close();
      device = null;
      await removeMdev(uuid);
      expect(findMdev(uuid)).toBeNull();
      made.delete(uuid);
    });
  });
});

describeMtty('the CLI on each backend', () => {
  for (const backend of BACKENDS) {
    describeBackend(backend, 'info and migration info', () => {
      test('info and migration info open the mtty by UUID and say through what', async () => {
        const uuid = makeMtty('mtty-1', made);
        const d = findMdev(uuid)!;
        const env = { ...process.env };
        const r = await cli(['info', '--json', '--backend', backend, uuid.toUpperCase()], env);
        expect([r.code, r.stderr]).toEqual([0, '']);
        const j = validJson('info', r.stdout);
        expect(j).toMatchObject({
          bdf: uuid,
          source: 'vfio',
          driver: 'mtty',
          vendor: 0x4348,
          device: 0x3253,
          iommuGroup: d.iommuGroup,
          backend: {
            kind: backend,
            requested: backend,
            opened: true,
            cdev: backend === 'iommufd' ? d.cdev : null,
          },
          resetMethods: [],
        });
        const m = await cli(['migration', 'info', '--json', '--backend', backend, uuid], env);
        expect([m.code, m.stderr]).toEqual([0, '']);
        expect(validJson('migration-info', m.stdout)).toMatchObject({
          device: uuid,
          supported: true,
          state: 'RUNNING',
          dataSize: 60,
        });
        // auto takes the cdev where the kernel has cdevs, as for a PCI function; else the group.
        const auto = await cli(['info', uuid], env);
        expect(auto.stdout).toMatch(
          iommufdMissing() === null
            ? /^backend: iommufd \(opened through \/dev\/vfio\/devices\/vfio\d+; auto: /m
            : /^backend: type1 \(opened through its group; auto: iommufd cannot be had/m,
        );
      });
    });
  }
});

describeDevice('edu', 'an mtty beside a PCI function', (bdf) => {
  describeMtty('in one IOAS with edu', () => {
    describeBackend('iommufd', 'an mtty and edu', () => {
      test("the function's DMA goes through the IOAS the mtty's access shares", async () => {
        const uuid = makeMtty('mtty-1', made);
        using iommu = IommufdBackend.open();
        const edu = iommu.openDevice(bdf());
        const mtty = iommu.openDevice(uuid);
        try {
          expect(mtty.groupNumber).toBe(findMdev(uuid)!.iommuGroup);
          expect(new Set(iommu.ioas.attachedDevices())).toEqual(new Set([edu.device, mtty.device]));
          expect(iommu.ioas.iovaRanges().alignment).toBe(4096);
          using ram = GuestRam.create(MIB);
          iommu.ioas.mapDma({ iova: 0x100000, size: MIB, memory: ram });
          const d = edu.device;
          const cmd = d.read(CONFIG, 4, 2) as number;
          d.write(CONFIG, 4, 2, cmd | CMD_MEMORY | CMD_BUS_MASTER);
          using bar0 = d.map(VFIO_PCI_BAR0_REGION_INDEX, 0, 4096);
          const bytes = new Uint8Array(ram.buffer(0, MIB));
          for (let i = 0; i < 256; i++) bytes[i] = (i * 13 + 5) & 0xff;
          await eduDmaMapped(bar0, 0x100000, 256, false);
          await eduDmaMapped(bar0, 0x100000 + 0x8000, 256, true);
          expect(bytes.subarray(0x8000, 0x8100)).toEqual(bytes.subarray(0, 256));
          d.write(CONFIG, 4, 2, cmd);
          expect(iommu.ioas.unmapDma(0x100000, MIB)).toBe(MIB);
        } finally {
          mtty.release();
          edu.release();
        }
      });
    });
  });
});
