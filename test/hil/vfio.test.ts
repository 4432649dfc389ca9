// Container, group, device and viability, region info and config space on real vfio-pci.
import * as fs from 'node:fs';
import { Container, Group, VfioError, VFIO_PCI_ROM_REGION_INDEX } from '../../lib';
import { CONFIG, CMD_BUS_MASTER, ROLES, describeDevice, msixTable, openDevice } from './hil';

const BAR_FLAGS_MMAP = 1 << 2; // VFIO_REGION_INFO_FLAG_MMAP

for (const role of ROLES) {
  describeDevice(role, 'container, group and device', (bdf) => {
    test('the container speaks VFIO API 0 and offers Type1', () => {
      const c = Container.open();
      try {
        expect(c.apiVersion).toBe(0);
        expect(c.supportedIommuTypes()).toContain('Type1v2');
      } finally {
        c.close();
      }
    });

    test('the group number matches sysfs and the group is viable', () => {
      const b = bdf();
      const expected = Number(fs.readlinkSync(`/sys/bus/pci/devices/${b}/iommu_group`).split('/').pop());
      expect(Group.numberOf(b)).toBe(expected);
      const g = Group.openByBdf(b);
      try {
        expect(g.number).toBe(expected);
        expect(g.path).toBe(`/dev/vfio/${expected}`);
        expect(g.status()).toEqual({ viable: true, containerSet: false });
        expect(g.members()).toContainEqual({ bdf: b, driver: 'vfio-pci' });
      } finally {
        g.close();
      }
    });

    test('setContainer, setIommu and openDevice give a PCI device with the config region', () => {
      const o = openDevice(bdf());
      try {
        expect(o.group.status()).toEqual({ viable: true, containerSet: true });
        const info = o.device.info();
        expect(info.pci).toBe(true);
        expect(info.numRegions).toBeGreaterThanOrEqual(CONFIG + 1);
        expect(info.numIrqs).toBeGreaterThanOrEqual(1);
        const iommu = o.container.iommuInfo();
        expect(iommu.iovaPgsizes & 0x1000n).toBe(0x1000n);
        const ranges = iommu.caps.find((c) => c.kind === 'iova-ranges');
        expect(ranges).toBeDefined();
        expect(o.device.bdf).toBe(bdf());
      } finally {
        o.close();
      }
    });

    test('a second open of the same group is EBUSY, and the error names the group', () => {
      const g = Group.openByBdf(bdf());
      try {
        let err: unknown;
        try {
          Group.openByBdf(bdf()).close();
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(VfioError);
        expect((err as VfioError).code).toBe('EBUSY');
        expect((err as VfioError).path).toBe(g.path);
      } finally {
        g.close();
      }
    });

    test('opening a device that is not in the group is a VfioError', () => {
      const o = openDevice(bdf());
      try {
        expect(() => o.group.openDevice('0000:00:1f.0')).toThrow(VfioError);
      } finally {
        o.close();
      }
    });
  });

  describeDevice(role, 'region info and config space', (bdf) => {
    test('config space reads agree with sysfs and across widths', () => {
      const b = bdf();
      const sysfs = fs.readFileSync(`/sys/bus/pci/devices/${b}/config`);
      const o = openDevice(b);
      try {
        const region = o.device.regionInfo(CONFIG);
        expect(region.readable && region.writable).toBe(true);
        expect(region.size).toBeGreaterThanOrEqual(256);
        // IDs, revision and class, header type, BARs and subsystem IDs read through unchanged;
        // vfio-pci virtualizes the command register, the ROM BAR and the capability chain.
        for (const [off, size] of [
          [0, 4],
          [8, 4],
          [0x0e, 1],
          [0x10, 4],
          [0x14, 4],
          [0x18, 4],
          [0x2c, 4],
        ] as const) {
          expect(o.device.read(CONFIG, off, size)).toBe(sysfs.readUIntLE(off, size));
        }
        const bytes = o.device.readBlock(CONFIG, 0, 256);
        for (let off = 0; off < 256; off += 4) {
          const dword = o.device.read(CONFIG, off, 4) as number;
          expect(bytes.readUInt32LE(off)).toBe(dword);
          expect(o.device.read(CONFIG, off, 2)).toBe(dword & 0xffff);
          expect(o.device.read(CONFIG, off + 2, 2)).toBe(dword >>> 16);
          expect(o.device.read(CONFIG, off + 3, 1)).toBe(dword >>> 24);
        }
      } finally {
        o.close();
      }
    });

    test('config writes land: bus master toggles in the command register', () => {
      const o = openDevice(bdf());
      try {
        const cmd = o.device.read(CONFIG, 4, 2) as number;
        o.device.write(CONFIG, 4, 2, cmd | CMD_BUS_MASTER);
        expect((o.device.read(CONFIG, 4, 2) as number) & CMD_BUS_MASTER).toBe(CMD_BUS_MASTER);
        o.device.write(CONFIG, 4, 2, cmd & ~CMD_BUS_MASTER);
        expect((o.device.read(CONFIG, 4, 2) as number) & CMD_BUS_MASTER).toBe(0);
        o.device.write(CONFIG, 4, 2, cmd);
      } finally {
        o.close();
      }
    });

    test('BAR region info agrees with sysfs resource sizes and flags', () => {
      const b = bdf();
      const resources = fs
        .readFileSync(`/sys/bus/pci/devices/${b}/resource`, 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split(/\s+/).map((x) => BigInt(x)));
      const o = openDevice(b);
      try {
        for (let bar = 0; bar <= VFIO_PCI_ROM_REGION_INDEX; bar++) {
          const [start, end, flags] = resources[bar];
          const info = o.device.regionInfo(bar);
          expect(info.index).toBe(bar);
          const size = start === 0n && end === 0n ? 0 : Number(end - start + 1n);
          expect(info.size).toBe(size);
          if (size === 0 || bar === VFIO_PCI_ROM_REGION_INDEX) continue;
          expect(info.readable && info.writable).toBe(true);
          const isIo = (flags & 0x100n) !== 0n; // IORESOURCE_IO
          // vfio-pci never mmaps I/O-port BARs; MMIO BARs are mappable here (page-exclusive).
          if (isIo) expect(info.mappable).toBe(false);
          expect(info.mappable).toBe((info.flags & BAR_FLAGS_MMAP) !== 0);
          // Regions do not overlap inside the device fd.
          expect(info.offset % 4096).toBe(0);
        }
      } finally {
        o.close();
      }
    });

    test('every mappable BAR maps, and a dword reads the same through the mapping and the fd', () => {
      const o = openDevice(bdf());
      try {
        const msix = msixTable(o.device);
        let mapped = 0;
        for (let bar = 0; bar < 6; bar++) {
          const info = o.device.regionInfo(bar);
          if (!info.mappable || info.size === 0) continue;
          const m = o.device.map(bar, 0, info.size);
          try {
            expect(m.length).toBe(info.size);
            // The fd path reads the MSI-X table as ones (vfio-pci owns it); look past it.
            const off = msix?.bar === bar && msix.offset === 0 ? msix.size : 0;
            expect(m.read32(off)).toBe(o.device.read(bar, off, 4));
          } finally {
            m.close();
          }
          mapped++;
        }
        expect(mapped).toBeGreaterThan(0);
      } finally {
        o.close();
      }
    });

    test('out-of-range region access is a RangeError naming the limit', () => {
      const o = openDevice(bdf());
      try {
        const size = o.device.regionInfo(CONFIG).size;
        expect(() => o.device.read(CONFIG, size, 4)).toThrow(RangeError);
        expect(() => o.device.read(CONFIG, size, 4)).toThrow(new RegExp(`${size}`));
        expect(() => o.device.read(CONFIG, size - 2, 4)).toThrow(RangeError);
        expect(() => o.device.read(CONFIG, 0, 3 as 4)).toThrow(RangeError);
        expect(() => o.device.read(CONFIG, -1, 4)).toThrow(RangeError);
        // Config space is never mappable: refused with a VfioError, not a crash or a fault.
        expect(() => o.device.map(CONFIG, 0, 256)).toThrow(VfioError);
        // The kernel rejects an index past the last region; the error keeps its errno.
        expect(() => o.device.regionInfo(1000)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      } finally {
        o.close();
      }
    });
  });
}
