// The iommufd and device cdev side of the addon and of lib/vfio, without a kernel that has them:
// the uAPI the addon is built with against the kernel headers' facts, the ioctls' argument checks
// (/dev/null stands in for /dev/iommu and the cdev, so a well-formed request reaches ioctl(2) and
// comes back ENOTTY), the decoders, and Ioas's record and checks with the ioctls replaced by a fake
// kernel that holds the mappings.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Device, GuestRam, Ioas, Iommufd, IommufdBackend, openCdevDevice, VfioError } from '../../lib';
import { native } from '../../lib/native';
import { DMA_HANDLE } from '../../lib/vfio/dma-types';
import { IOMMUFD_IOCTLS, IOMMUFD_LAYOUT, parseHwInfo, parseIovaRanges } from '../../lib/vfio/iommufd-uapi';
import {
  devicesNotOwnedError,
  parseHotResetInfo,
  VFIO_PCI_DEVID_NOT_OWNED,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID,
} from '../../lib/vfio/hot-reset';
import { caught, tempDir } from './helpers';

/**
 * The addon's functions the fake kernel replaces (the addon's own are read-only): lib/vfio sees
 * `native` through this module mock, which answers from here first.
 */
const mockKernel: Record<string, unknown> = {};
jest.mock('../../lib/native', () => {
  const actual = jest.requireActual('../../lib/native');
  const native = new Proxy(
    {},
    {
      get: (_t, k: string) =>
        k in mockKernel ? mockKernel[k] : (actual.native as Record<string, unknown>)[k],
    },
  );
  return { ...actual, native };
});

describe('the uAPI the addon is built with', () => {
  it('has the kernel headers’ ioctl numbers', () => {
    for (const [name, nr] of Object.entries(IOMMUFD_IOCTLS))
      expect([name, native.iommufdUapi[name]]).toEqual([name, nr]);
    // _IO(';', n): type 0x3b in bits 8..15, no size, no direction.
    expect(IOMMUFD_IOCTLS).toMatchObject({
      IOMMU_DESTROY: 0x3b80,
      IOMMU_IOAS_ALLOC: 0x3b81,
      IOMMU_IOAS_IOVA_RANGES: 0x3b84,
      IOMMU_IOAS_MAP: 0x3b85,
      IOMMU_IOAS_UNMAP: 0x3b86,
      IOMMU_HWPT_ALLOC: 0x3b89,
      IOMMU_GET_HW_INFO: 0x3b8a,
      VFIO_DEVICE_BIND_IOMMUFD: 0x3b76,
      VFIO_DEVICE_ATTACH_IOMMUFD_PT: 0x3b77,
      VFIO_DEVICE_DETACH_IOMMUFD_PT: 0x3b78,
    });
    expect([
      native.iommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA,
      native.iommufdUapi.IOMMU_IOAS_MAP_WRITEABLE,
      native.iommufdUapi.IOMMU_IOAS_MAP_READABLE,
    ]).toEqual([1, 2, 4]);
  });

  it('lays every struct out as the kernel does: sizes and field offsets', () => {
    const built = Object.fromEntries(Object.keys(IOMMUFD_LAYOUT).map((k) => [k, native.iommufdUapi[k]]));
    expect(built).toEqual(IOMMUFD_LAYOUT);
    // Every layout fact the addon reports is one the test knows.
    const reported = Object.keys(native.iommufdUapi).filter((k) => k.includes(' ') || k.includes('.'));
    expect(reported.sort()).toEqual(Object.keys(IOMMUFD_LAYOUT).sort());
  });
});

describe('the ioctls’ argument checks', () => {
  const h = native.openFd('/dev/null');
  afterAll(() => native.closeFd(h));

  it('hands well-formed requests to the kernel, each named by its ioctl', () => {
    using ram = GuestRam.create(0x4000);
    const calls: [string, () => unknown][] = [
      ['IOMMU_IOAS_ALLOC', () => native.iommufdIoasAlloc(h)],
      ['IOMMU_DESTROY', () => native.iommufdDestroy(h, 3)],
      ['IOMMU_IOAS_IOVA_RANGES', () => native.iommufdIoasIovaRanges(h, 3)],
      ['IOMMU_HWPT_ALLOC', () => native.iommufdHwptAlloc(h, 1, 2, 0)],
      ['IOMMU_GET_HW_INFO', () => native.iommufdGetHwInfo(h, 1)],
      [
        'IOMMU_IOAS_MAP',
        () => native.iommufdIoasMap(h, 2, ram[DMA_HANDLE](), 0x1000, 0x10000, 0x2000, true, true),
      ],
      ['IOMMU_IOAS_UNMAP', () => native.iommufdIoasUnmap(h, 2, 0x10000, 0x2000)],
      ['VFIO_DEVICE_BIND_IOMMUFD', () => native.vfioDeviceBindIommufd(h, h)],
      ['VFIO_DEVICE_ATTACH_IOMMUFD_PT', () => native.vfioDeviceAttachIommufdPt(h, 2)],
      ['VFIO_DEVICE_DETACH_IOMMUFD_PT', () => native.vfioDeviceDetachIommufdPt(h)],
    ];
    for (const [op, call] of calls) {
      const e = caught(call);
      expect([op, e.code, e.op, e.errno, e.path]).toEqual([op, 'ENOTTY', op, -25, '/dev/null']);
    }
  });

  it('rejects the thread-pool calls with the same errors', async () => {
    using ram = GuestRam.create(0x2000);
    await expect(
      native.iommufdIoasMapAsync(h, 2, ram[DMA_HANDLE](), 0, 0x10000, 0x2000, true, false),
    ).rejects.toMatchObject({ code: 'ENOTTY', op: 'IOMMU_IOAS_MAP' });
    await expect(native.vfioDeviceBindIommufdAsync(h, h)).rejects.toMatchObject({
      code: 'ENOTTY',
      op: 'VFIO_DEVICE_BIND_IOMMUFD',
    });
  });

  it('refuses what the type1 path refuses: memory out of range, closed, read-only for writes', () => {
    const ram = GuestRam.create(0x4000);
    expect(() => native.iommufdIoasMap(h, 2, ram[DMA_HANDLE](), 0x3000, 0, 0x2000, true, true)).toThrow(
      /IOMMU_IOAS_MAP: offset 12288 size 8192 is outside the memory \(length 16384\)/,
    );
    const handle = ram[DMA_HANDLE]();
    ram.close();
    expect(caught(() => native.iommufdIoasMap(h, 2, handle, 0, 0, 0x1000, true, true)).code).toBe('ECLOSED');
    expect(() => native.iommufdIoasMap(h, 2 ** 32, handle, 0, 0, 0x1000, true, true)).toThrow(RangeError);
    expect(() => native.iommufdIoasMap(h, 2, {} as never, 0, 0, 0x1000, true, true)).toThrow(TypeError);
    expect(() => native.iommufdIoasUnmap(h, 2, -1, 0x1000)).toThrow(RangeError);
  });

  it('says ECLOSED for a closed iommufd or device, for each side of a bind', async () => {
    const closed = native.openFd('/dev/null');
    native.closeFd(closed);
    expect(caught(() => native.vfioDeviceBindIommufd(h, closed)).code).toBe('ECLOSED');
    expect(caught(() => native.vfioDeviceBindIommufd(closed, h)).code).toBe('ECLOSED');
    expect(caught(() => native.iommufdIoasAlloc(closed)).code).toBe('ECLOSED');
    expect(() => native.vfioDeviceBindIommufdAsync(h, closed)).toThrow(VfioError);
  });
});

describe('decoders', () => {
  it('IOMMU_IOAS_IOVA_RANGES: the alignment and the ranges, in order', () => {
    const words = BigUint64Array.from([0x1000n, 0xfef00000n, 0xffffffffffffn, 0n, 0xfedfffffn]);
    expect(parseIovaRanges(words)).toEqual({
      alignment: 0x1000,
      ranges: [
        { start: 0n, end: 0xfedfffffn },
        { start: 0xfef00000n, end: 0xffffffffffffn },
      ],
    });
    expect(parseIovaRanges(BigUint64Array.from([1n]))).toEqual({ alignment: 1, ranges: [] });
    expect(() => parseIovaRanges(BigUint64Array.from([0x1000n, 0n]))).toThrow(/not alignment \+ pairs/);
    expect(() => parseIovaRanges(BigUint64Array.from([0x1800n]))).toThrow(/not a power of two/);
  });

  it('hot reset info asked through a cdev: iommufd device IDs instead of groups', () => {
    const buf = Buffer.alloc(12 + 2 * 8);
    buf.writeUInt32LE(buf.length, 0);
    buf.writeUInt32LE(VFIO_PCI_HOT_RESET_FLAG_DEV_ID, 4);
    buf.writeUInt32LE(2, 8);
    buf.writeUInt32LE(11, 12);
    buf.writeUInt16LE(0, 16);
    buf.writeUInt8(1, 18);
    buf.writeUInt8(0, 19);
    buf.writeUInt32LE(VFIO_PCI_DEVID_NOT_OWNED, 20);
    buf.writeUInt8(1, 26);
    buf.writeUInt8(1, 27);
    const info = parseHotResetInfo(buf);
    expect(info.devices.map((d) => [d.bdf, d.group, d.devId])).toEqual([
      ['0000:01:00.0', -1, 11],
      ['0000:01:00.1', -1, VFIO_PCI_DEVID_NOT_OWNED],
    ]);
    expect(info.groups).toEqual([]);
    const e = devicesNotOwnedError('0000:01:00.0', info);
    expect([e.code, e.message]).toEqual(['EDEVICES', expect.stringMatching(/does not own: 0000:01:00.1$/)]);
  });

  it('IOMMU_GET_HW_INFO: the VT-d registers and the dirty-tracking capability', () => {
    const data = Buffer.alloc(24);
    data.writeUInt32LE(1, 0);
    data.writeBigUInt64LE(0x00d2008c40660462n, 8);
    data.writeBigUInt64LE(0xf050dan, 16);
    expect(parseHwInfo({ type: 1, capabilities: 1n, data })).toMatchObject({
      typeName: 'intel-vtd',
      dirtyTracking: true,
      vtd: { flags: 1, capReg: 0x00d2008c40660462n, ecapReg: 0xf050dan },
    });
    expect(parseHwInfo({ type: 0, capabilities: 0n, data: Buffer.alloc(0) })).toMatchObject({
      typeName: 'none',
      dirtyTracking: false,
    });
    expect(parseHwInfo({ type: 9, capabilities: 0n, data: Buffer.alloc(0) }).typeName).toBe('type 9');
  });
});

/**
 * A fake kernel behind the addon's iommufd calls: one IOAS with the lab's IOVA ranges (the MSI
 * window reserved), holding mappings as the kernel would, with ENOENT for an unmap of nothing.
 */
function fakeKernel() {
  const held = new Map<number, number>();
  const calls: string[] = [];
  const ranges = BigUint64Array.from([0x1000n, 0n, 0xfedfffffn, 0xfef00000n, 0xffffffffffffn]);
  const map = jest.fn(
    (
      _h: unknown,
      ioas: number,
      _m: unknown,
      offset: number,
      iova: number,
      size: number,
      r: boolean,
      w: boolean,
    ) => {
      calls.push(
        `map ${ioas} ${iova.toString(16)}+${size.toString(16)} @${offset.toString(16)} ${r ? 'r' : ''}${w ? 'w' : ''}`,
      );
      held.set(iova, size);
    },
  );
  Object.assign(mockKernel, {
    iommufdIoasAlloc: () => 7,
    iommufdIoasIovaRanges: () => {
      calls.push('ranges');
      return ranges;
    },
    iommufdIoasMap: map,
    iommufdIoasMapAsync: async (...a: Parameters<typeof map>) => map(...a),
    iommufdIoasUnmap: (_h: unknown, ioas: number, iova: number, size: number) => {
      calls.push(`unmap ${ioas} ${iova.toString(16)}+${size.toString(16)}`);
      let done = 0;
      for (const [at, n] of [...held]) {
        if (at >= iova && at + n <= iova + size) {
          held.delete(at);
          done += n;
        }
      }
      if (done === 0) {
        throw new VfioError({
          message: 'IOMMU_IOAS_UNMAP failed',
          code: 'ENOENT',
          errno: 2,
          op: 'IOMMU_IOAS_UNMAP',
        });
      }
      return done;
    },
    iommufdDestroy: (_h: unknown, id: number) => void calls.push(`destroy ${id}`),
    vfioDeviceBindIommufd: () => 11,
    vfioDeviceAttachIommufdPt: (_d: unknown, pt: number) => {
      calls.push(`attach ${pt}`);
      return 12;
    },
    vfioDeviceDetachIommufdPt: () => void calls.push('detach'),
  });
  return {
    held,
    calls,
    map,
    restore: () => {
      for (const k of Object.keys(mockKernel)) delete mockKernel[k];
    },
  };
}

describe('Ioas on a fake kernel: the type1 record’s checks and bookkeeping', () => {
  let k: ReturnType<typeof fakeKernel>;
  let fd: Iommufd;
  let ioas: Ioas;
  let ram: GuestRam;
  beforeEach(() => {
    k = fakeKernel();
    fd = Iommufd.open('/dev/null');
    ioas = fd.allocIoas();
    ram = GuestRam.create(64 * 1024, { name: 'ioas-ram' });
  });
  afterEach(() => {
    fd.close();
    ram.close();
    k.restore();
  });

  it('reports its IOVA ranges and the granularity of a mapping', () => {
    expect(ioas.iommuInfo()).toEqual({
      pageSizes: [4096],
      minPageSize: 4096,
      iovaAlignment: 4096,
      iovaRanges: [
        { start: 0n, end: 0xfedfffffn },
        { start: 0xfef00000n, end: 0xffffffffffffn },
      ],
    });
    expect([ioas.kind, ioas.id, ioas.path]).toEqual(['iommufd', 7, '/dev/null']);
  });

  it('maps at the IOVA asked, records exactly, and refuses every bad request before the kernel', () => {
    ioas.mapDma({ iova: 0x10000, size: 0x8000, memory: ram, offset: 0x4000 });
    ioas.mapDma({ iova: 0x18000, size: 0x4000, memory: ram, write: false });
    expect(k.calls.filter((c) => c.startsWith('map'))).toEqual([
      'map 7 10000+8000 @4000 rw',
      'map 7 18000+4000 @0 r',
    ]);
    expect(ioas.dmaMappings().map((m) => [m.iova, m.size, m.offset, m.write])).toEqual([
      [0x10000, 0x8000, 0x4000, true],
      [0x18000, 0x4000, 0, false],
    ]);
    const codes = (reqs: Parameters<Ioas['mapDma']>[0][]) =>
      reqs.map((r) => caught(() => ioas.mapDma(r)).code);
    expect(
      codes([
        { iova: 0x20800, size: 0x1000, memory: ram },
        { iova: 0x20000, size: 0x1800, memory: ram },
        { iova: 0x20000, size: 0x1000, memory: ram, offset: 8 },
        { iova: 0x20000, size: 0, memory: ram },
        { iova: 0xfee00000, size: 0x1000, memory: ram },
        { iova: 0x14000, size: 0x8000, memory: ram },
      ]),
    ).toEqual(['EALIGN', 'EALIGN', 'EALIGN', 'EZEROSIZE', 'EIOVARANGE', 'EOVERLAP']);
    const e = caught(() => ioas.mapDma({ iova: 0xfee00000, size: 0x1000, memory: ram }));
    expect([e.op, e.hint]).toEqual(['IOMMU_IOAS_MAP', expect.stringContaining('[0x0, 0xfedfffff]')]);
    expect(caught(() => ioas.mapDma({ iova: 0x20800, size: 0x1000, memory: ram })).hint).toMatch(
      /out_iova_alignment is 0x1000/,
    );
    expect(() => ioas.mapDma({ iova: 0x20000, size: 0x1000, memory: ram, offset: 0x10000 })).toThrow(
      RangeError,
    );
    // Half a mapping, a gap, nothing: refused before the kernel (which would say ENOENT).
    const before = k.calls.length;
    for (const [iova, size] of [
      [0x10000, 0x4000],
      [0x40000, 0x1000],
      [0x10000, 0x10000],
    ]) {
      expect(caught(() => ioas.unmapDma(iova, size))).toMatchObject({
        code: 'ENOTMAPPED',
        op: 'IOMMU_IOAS_UNMAP',
      });
    }
    expect(k.calls.length).toBe(before);
    expect(ioas.unmapDma(0x10000, 0xc000)).toBe(0xc000);
    expect([ioas.dmaMappings(), ioas.dmaMappedBytes, k.held.size]).toEqual([[], 0, 0]);
  });

  it('keeps the kernel’s errno with the RLIMIT_MEMLOCK hint for iommufd’s per-user accounting', () => {
    k.map.mockImplementationOnce(() => {
      throw new VfioError({
        message: 'IOMMU_IOAS_MAP failed',
        code: 'ENOMEM',
        errno: 12,
        op: 'IOMMU_IOAS_MAP',
      });
    });
    const e = caught(() => ioas.mapDma({ iova: 0, size: 0x2000, memory: ram }));
    expect([e.code, e.errno, e.op]).toEqual(['ENOMEM', -12, 'IOMMU_IOAS_MAP']);
    expect(e.message).toContain("[0x0, 0x2000) (8192 bytes of guest RAM 'ioas-ram' from offset 0x0)");
    expect(e.hint).toMatch(/per user/);
    expect(ioas.dmaMappings()).toEqual([]);
  });

  it('maps on the thread pool through the same checks, and close unmaps everything then destroys', async () => {
    await ioas.mapDmaAsync({ iova: 0x100000, size: 0x10000, memory: ram });
    await expect(ioas.mapDmaAsync({ iova: 0x100000, size: 0x1000, memory: ram })).rejects.toMatchObject({
      code: 'EOVERLAP',
    });
    ioas.mapDma({ iova: 0x200000, size: 0x1000, memory: ram });
    k.calls.length = 0;
    ioas.close();
    expect(k.calls).toEqual(['unmap 7 200000+1000', 'unmap 7 100000+10000', 'destroy 7']);
    expect(caught(() => ioas.mapDma({ iova: 0, size: 0x1000, memory: ram })).code).toBe('ECLOSED');
  });

  it('knows its Iommufd: the whole class from allocIoas, what every Iommufd is from a plain Ioas', () => {
    const second = fd.allocIoas();
    expect(second.iommufd).toBe(fd);
    const third = second.iommufd.allocIoas(); // typed Iommufd, so its own calls are there
    expect(fd.ioases()).toEqual([ioas, second, third]);
    // `ioas` is declared a plain Ioas: its iommufd is the same object, and instanceof narrows it.
    expect(ioas.iommufd).toBe(fd);
    expect(ioas.iommufd instanceof Iommufd && ioas.iommufd.ioases().length).toBe(3);
    expect([ioas.iommufd.fd, ioas.iommufd.path]).toEqual([fd.fd, '/dev/null']);
    expect(IommufdBackend.wrap(ioas).iommufd).toBe(fd);
    // An IOAS over something that is not an Iommufd cannot make a backend that owns an Iommufd.
    const stranger = Ioas._create(
      {
        path: '/dev/null',
        closed: false,
        fd: -1,
        hwInfo: () => {
          throw new Error('not asked');
        },
        close: () => undefined,
        _destroy: () => undefined,
        [Symbol.dispose]: () => undefined,
      },
      9,
    );
    expect(() => IommufdBackend.wrap(stranger)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringMatching(/allocIoas/) }),
    );
    third.close();
    second.close();
    expect(k.calls.filter((c) => c.startsWith('destroy'))).toEqual(['destroy 7', 'destroy 7']);
  });

  it('opens a device through its cdev (no group), attaches it, and re-reads the ranges after', () => {
    const t = tempDir('cdev-');
    try {
      const dev = path.join(t.dir, 'bus/pci/devices/0000:00:03.0');
      fs.mkdirSync(path.join(dev, 'vfio-dev/vfio0'), { recursive: true });
      fs.writeFileSync(path.join(dev, 'vfio-dev/vfio0/dev'), '237:0\n');
      // The cdev node: /dev/null through a symlink named as the kernel names it.
      fs.mkdirSync(path.join(t.dir, 'devices'));
      fs.symlinkSync('/dev/null', path.join(t.dir, 'devices/vfio0'));
      const d = openCdevDevice('00:03.0', fd, { sysfsRoot: t.dir, cdevDir: path.join(t.dir, 'devices') });
      try {
        expect([d.bdf, d.backend, d.iommufdDevId, d.path]).toEqual([
          '0000:00:03.0',
          'iommufd',
          11,
          path.join(t.dir, 'devices/vfio0'),
        ]);
        ioas.iommuInfo();
        k.calls.length = 0;
        expect(ioas.attach(d)).toBe(12);
        ioas.mapDma({ iova: 0, size: 0x1000, memory: ram });
        expect(k.calls).toEqual(['attach 7', 'ranges', 'map 7 0+1000 @0 rw']);
        expect(ioas.attachedDevices()).toEqual([d]);
        // A second open of the same device in this process is refused before the kernel, bound to
        // the IOAS's iommufd as to the Iommufd itself.
        expect(caught(() => openCdevDevice('0000:00:03.0', ioas.iommufd, { sysfsRoot: t.dir })).code).toBe(
          'EBUSY',
        );
        ioas.detach(d);
        expect(ioas.attachedDevices()).toEqual([]);
        expect(caught(() => ioas.detach(d)).code).toBe('ENOTATTACHED');
      } finally {
        d.close();
      }
      // A device from a group cannot join an IOAS.
      const h = native.openFd('/dev/null');
      using g = Device._fromHandle(h, '0000:00:04.0', '/dev/vfio/5');
      expect(g.backend).toBe('type1');
      expect(caught(() => ioas.attach(g))).toMatchObject({
        code: 'ENOTBOUND',
        hint: expect.stringMatching(/openCdevDevice/),
      });
      expect(caught(() => openCdevDevice('0000:00:05.0', fd, { sysfsRoot: t.dir })).code).toBe('ENOCDEV');
    } finally {
      t.remove();
    }
  });
});
