import { readFileSync } from 'node:fs';

import { Container, Group, GuestRam, type VfioError } from '../../../lib';
import { native } from '../../../lib/native';
import { iommufdHandle } from '../../../lib/vfio/iommufd';
import { describeBackends, openOn, type OpenedOn } from '../backends';
import { describeDevice } from '../hil';
import { runWithSmallMemlock } from './memlock';

function caught(fn: () => unknown): VfioError {
  try {
    fn();
  } catch (e) {
    return e as VfioError;
  }
  throw new Error('expected a throw');
}

// The DMA record and its checks, the same on both backends: a type1 Container and an iommufd Ioas.
describeBackends('edu', 'the DMA record', (bdf, backend) => {
  let o: OpenedOn;
  let ram: GuestRam;
  beforeEach(() => {
    o = openOn(bdf());
    ram = GuestRam.create(64 * 1024, { name: 'dma-api' });
  });
  afterEach(() => {
    o?.close();
    ram?.close();
  });

  it('reports page sizes and the IOVA ranges with the MSI hole', () => {
    const info = o.dma.iommuInfo();
    expect(o.dma.kind).toBe(backend);
    expect(info.minPageSize).toBe(4096);
    expect(info.pageSizes).toContain(4096);
    expect(info.iovaRanges.length).toBeGreaterThanOrEqual(2);
    expect(info.iovaRanges[0]).toEqual({ start: 0n, end: 0xfedfffffn });
    expect(info.iovaRanges[1].start).toBe(0xfef00000n);
  });

  it('maps, records, unmaps exactly, and names the numbers of every bad request', () => {
    const dma = o.dma;
    const mapOp = backend === 'type1' ? 'VFIO_IOMMU_MAP_DMA' : 'IOMMU_IOAS_MAP';
    dma.mapDma({ iova: 0x10000, size: 0x8000, memory: ram, offset: 0x4000 });
    dma.mapDma({ iova: 0x18000, size: 0x4000, memory: ram, write: false });
    expect(dma.dmaMappings().map((m) => [m.iova, m.size, m.offset, m.read, m.write])).toEqual([
      [0x10000, 0x8000, 0x4000, true, true],
      [0x18000, 0x4000, 0, true, false],
    ]);
    expect(dma.dmaMappedBytes).toBe(0xc000);

    const e1 = caught(() => dma.mapDma({ iova: 0x20800, size: 0x1000, memory: ram }));
    expect([e1.code, e1.op, e1.message]).toEqual(['EALIGN', mapOp, expect.stringContaining('iova 0x20800')]);
    expect(e1.message).toContain('0x1000');
    expect(caught(() => dma.mapDma({ iova: 0x20000, size: 0x1800, memory: ram })).code).toBe('EALIGN');
    expect(caught(() => dma.mapDma({ iova: 0x20000, size: 0x1000, memory: ram, offset: 8 })).code).toBe(
      'EALIGN',
    );
    expect(caught(() => dma.mapDma({ iova: 0x20000, size: 0, memory: ram })).code).toBe('EZEROSIZE');
    const e2 = caught(() => dma.mapDma({ iova: 0xfee00000, size: 0x1000, memory: ram }));
    expect(e2.code).toBe('EIOVARANGE');
    expect(e2.message).toContain('[0xfee00000, 0xfee01000)');
    expect(e2.hint).toContain('[0x0, 0xfedfffff]');
    using big = GuestRam.create(0x200000);
    const e3 = caught(() => dma.mapDma({ iova: 0xfed00000, size: 0x200000, memory: big }));
    expect(e3.code).toBe('EIOVARANGE');
    expect(e3.message).toContain('[0x0, 0xfedfffff]');
    const e4 = caught(() => dma.mapDma({ iova: 0x14000, size: 0x8000, memory: ram }));
    expect(e4.code).toBe('EOVERLAP');
    expect(e4.message).toContain('[0x10000, 0x18000)');
    expect(() => dma.mapDma({ iova: 0x20000, size: 0x1000, memory: ram, offset: 0x10000 })).toThrow(
      RangeError,
    );

    // Half a mapping, a gap, or nothing at all: refused before the kernel sees it.
    expect(caught(() => dma.unmapDma(0x10000, 0x4000)).code).toBe('ENOTMAPPED');
    expect(caught(() => dma.unmapDma(0x40000, 0x1000)).code).toBe('ENOTMAPPED');
    expect(caught(() => dma.unmapDma(0x10000, 0x10000)).code).toBe('ENOTMAPPED');
    expect(dma.dmaMappings()).toHaveLength(2);
    // Two whole neighbours in one call.
    expect(dma.unmapDma(0x10000, 0xc000)).toBe(0xc000);
    expect(dma.dmaMappings()).toEqual([]);

    dma.mapDma({ iova: 0x10000, size: 0x1000, memory: ram });
    o.close();
    expect(caught(() => dma.mapDma({ iova: 0, size: 0x1000, memory: ram })).code).toBe('ECLOSED');
  });

  it('close() unmaps what it mapped even while a device keeps the IOMMU context alive', () => {
    // type1 counts pinned pages in the process's locked_vm (VmLck), whatever the capabilities;
    // iommufd counts them in the user's: there the kernel's empty IOAS is the witness.
    const vmLck = (): number =>
      Number(/^VmLck:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
    const dma = o.dma;
    const base = vmLck();
    dma.mapDma({ iova: 0x100000, size: 0x10000, memory: ram });
    dma.mapDma({ iova: 0x200000, size: 0x8000, memory: ram });
    if (o.container !== null) {
      expect(vmLck() - base).toBe(0x18000 / 1024);
      o.container.close();
      expect(vmLck()).toBe(base);
    } else {
      const ioas = o.ioas!;
      const h = iommufdHandle(ioas.iommufd, 'test');
      // The attached device holds the IOAS: it cannot be destroyed yet, and close says so.
      expect(caught(() => ioas.close())).toMatchObject({
        code: 'EBUSY',
        message: expect.stringContaining(bdf()),
        hint: expect.stringMatching(/close \(or detach\) the devices/),
      });
      // Its mappings went all the same: the kernel finds nothing to unmap.
      expect(caught(() => native.iommufdIoasUnmap(h, ioas.id, 0x100000, 0x10000)).code).toBe('ENOENT');
    }
    expect(dma.dmaMappings()).toEqual([]);
    expect(dma.closed).toBe(true);
  });
});

describeBackends('edu', 'RLIMIT_MEMLOCK without CAP_IPC_LOCK', (bdf, backend) => {
  it('fails the map with ENOMEM and a hint, and leaves nothing mapped', () => {
    const size = 8 * 2 ** 20;
    const r = runWithSmallMemlock('memlock-child.js', bdf(), String(size), backend);
    expect(r.backend).toBe(backend);
    expect(r.mapped).toBeUndefined();
    expect([r.code, r.errno]).toEqual(['ENOMEM', -12]);
    expect(r.hint).toContain(`needed ${size} bytes`);
    expect(r.hint).toContain('RLIMIT_MEMLOCK is 1024 KiB');
    expect(r.hint).toContain('CAP_IPC_LOCK');
    if (backend === 'iommufd') expect(r.hint).toContain('per user');
    expect(r.recorded).toBe(0);
    expect(r.after).toBe(r.before);
    expect(r.kernelUnmapped).toBe(0);
  });
});

// What only type1 has: an IOMMU type set once a group is in, dma_avail, dma_entry_limit.
describeDevice('edu', 'Container DMA API on type1', (bdf) => {
  let container: Container;
  let group: Group;
  let ram: GuestRam;
  beforeEach(() => {
    container = Container.open();
    group = Group.openByBdf(bdf());
    group.setContainer(container);
    ram = GuestRam.create(64 * 1024, { name: 'dma-api' });
  });
  afterEach(() => {
    group?.close();
    container?.close();
    ram?.close();
  });

  it('refuses a map before the IOMMU type is set, before the kernel would say EINVAL', () => {
    const e = caught(() => container.mapDma({ iova: 0, size: 4096, memory: ram }));
    expect(e.code).toBe('ENOIOMMU');
    expect(e.hint).toContain('setIommu');
  });

  it('reports dma_avail, and counts a mapping against it', () => {
    container.setIommu();
    const info = container.iommuInfo();
    expect(info.dmaAvail).toBe(65535);
    container.mapDma({ iova: 0x10000, size: 0x1000, memory: ram });
    expect(container.iommuInfo().dmaAvail).toBe(65534);
    expect(typeof info.migration).toBe('boolean');
    expect(info.dirtyTracking).toBe(info.migration);
  });

  it('forgets its mappings and its IOMMU type when the last group leaves, as the kernel does', () => {
    container.setIommu();
    container.mapDma({ iova: 0x100000, size: 0x1000, memory: ram });
    group.close();
    expect(container.dmaMappings()).toEqual([]);
    expect(container.iommuType).toBeNull();
    expect(caught(() => container.mapDma({ iova: 0x100000, size: 0x1000, memory: ram })).code).toBe(
      'ENOIOMMU',
    );
  });

  it('fails the 65536th mapping with ENOSPC and a hint naming dma_avail and dma_entry_limit', () => {
    container.setIommu();
    const avail = container.iommuInfo().dmaAvail!;
    for (let i = 0; i < avail; i++) container.mapDma({ iova: i * 4096, size: 4096, memory: ram, offset: 0 });
    expect(container.iommuInfo().dmaAvail).toBe(0);
    const e = caught(() => container.mapDma({ iova: avail * 4096, size: 4096, memory: ram }));
    expect(e.code).toBe('ENOSPC');
    expect(e.errno).toBe(-28);
    expect(e.hint).toContain('dma_avail 0');
    expect(e.hint).toMatch(/dma_entry_limit is 65535/);
    expect(container.dmaMappings()).toHaveLength(avail);
    // One unmap of every whole mapping gives all the entries back.
    expect(container.unmapDma(0, avail * 4096)).toBe(avail * 4096);
    expect(container.iommuInfo().dmaAvail).toBe(avail);
  });
});
