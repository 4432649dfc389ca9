import * as fs from 'node:fs';

import { GuestRam, Mapping, memfd, type VfioError } from '../../lib';
import { native } from '../../lib/native';
import { DMA_HANDLE } from '../../lib/vfio/dma-types';
import { caught } from './helpers';

// The DMA ioctls' argument checks, before any kernel: /dev/null stands in for the container, so a
// request that passes every check reaches ioctl(2) and comes back as the kernel's ENOTTY.
describe('vfioMapDma / vfioUnmapDma arguments', () => {
  const h = native.openFd('/dev/null');
  afterAll(() => native.closeFd(h));

  it('resolves guest RAM and mappings, and hands well-formed requests to the kernel', () => {
    using ram = GuestRam.create(0x4000);
    const e = caught(() => native.vfioMapDma(h, ram[DMA_HANDLE](), 0x1000, 0x10000, 0x2000, true, true));
    expect([e.code, e.op]).toEqual(['ENOTTY', 'VFIO_IOMMU_MAP_DMA']);
    const fd = memfd('dma-arg', 0x2000);
    using m = Mapping.fromFd(fd, 0, 0x2000);
    expect(caught(() => native.vfioMapDma(h, m[DMA_HANDLE](), 0, 0, 0x2000, true, false)).code).toBe(
      'ENOTTY',
    );
    expect(caught(() => native.vfioUnmapDma(h, 0, 0x1000)).code).toBe('ENOTTY');
    fs.closeSync(fd);
  });

  it('refuses a range outside the memory, naming it, without forming offset + size', () => {
    using ram = GuestRam.create(0x4000);
    expect(() => native.vfioMapDma(h, ram[DMA_HANDLE](), 0x3000, 0, 0x2000, true, true)).toThrow(
      /offset 12288 size 8192 is outside the memory \(length 16384\)/,
    );
    expect(() =>
      native.vfioMapDma(
        h,
        ram[DMA_HANDLE](),
        Number.MAX_SAFE_INTEGER,
        0,
        Number.MAX_SAFE_INTEGER,
        true,
        true,
      ),
    ).toThrow(RangeError);
  });

  it('refuses closed memory, device writes into read-only mappings, and foreign handles', () => {
    const ram = GuestRam.create(0x1000);
    const handle = ram[DMA_HANDLE]();
    ram.close();
    expect((caught(() => native.vfioMapDma(h, handle, 0, 0, 0x1000, true, true)) as VfioError).code).toBe(
      'ECLOSED',
    );
    const fd = memfd('dma-ro', 0x1000);
    using ro = Mapping.fromFd(fd, 0, 0x1000, { writable: false });
    expect(caught(() => native.vfioMapDma(h, ro[DMA_HANDLE](), 0, 0, 0x1000, true, true)).code).toBe(
      'EACCES',
    );
    expect(caught(() => native.vfioMapDma(h, ro[DMA_HANDLE](), 0, 0, 0x1000, true, false)).code).toBe(
      'ENOTTY',
    );
    fs.closeSync(fd);
    expect(() => native.vfioMapDma(h, {} as never, 0, 0, 0x1000, true, true)).toThrow(TypeError);
    expect(() => native.vfioMapDma(h, h as never, 0, 0, 0x1000, true, true)).toThrow(TypeError);
    expect(() => native.vfioMapDma(h, ro[DMA_HANDLE](), 0, 0, 0x1000, 1 as never, true)).toThrow(TypeError);
  });
});
