import { readFileSync } from 'node:fs';

import { Container, Group, GuestRam, type VfioError } from '../../../lib';
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

  it('reports page sizes, IOVA ranges with the MSI hole, and dma_avail', () => {
    container.setIommu();
    const info = container.iommuInfo();
    expect(info.minPageSize).toBe(4096);
    expect(info.pageSizes).toContain(4096);
    expect(info.iovaRanges.length).toBeGreaterThanOrEqual(2);
    expect(info.iovaRanges[0].start).toBe(0n);
    expect(info.iovaRanges[0].end).toBe(0xfedfffffn);
    expect(info.iovaRanges[1].start).toBe(0xfef00000n);
    expect(info.dmaAvail).toBe(65535);
    expect(typeof info.migration).toBe('boolean');
    expect(info.dirtyTracking).toBe(info.migration);
  });

  it('maps, records, unmaps exactly, and names the numbers of every bad request', () => {
    container.setIommu();
    container.mapDma({ iova: 0x10000, size: 0x8000, memory: ram, offset: 0x4000 });
    container.mapDma({ iova: 0x18000, size: 0x4000, memory: ram, write: false });
    expect(container.dmaMappings().map((m) => [m.iova, m.size, m.offset, m.read, m.write])).toEqual([
      [0x10000, 0x8000, 0x4000, true, true],
      [0x18000, 0x4000, 0, true, false],
    ]);
    expect(container.iommuInfo().dmaAvail).toBe(65533);

    const e1 = caught(() => container.mapDma({ iova: 0x20800, size: 0x1000, memory: ram }));
    expect([e1.code, e1.message]).toEqual(['EALIGN', expect.stringContaining('iova 0x20800')]);
    expect(e1.message).toContain('0x1000');
    expect(caught(() => container.mapDma({ iova: 0x20000, size: 0x1800, memory: ram })).code).toBe('EALIGN');
    expect(caught(() => container.mapDma({ iova: 0x20000, size: 0x1000, memory: ram, offset: 8 })).code).toBe(
      'EALIGN',
    );
    expect(caught(() => container.mapDma({ iova: 0x20000, size: 0, memory: ram })).code).toBe('EZEROSIZE');
    const e2 = caught(() => container.mapDma({ iova: 0xfee00000, size: 0x1000, memory: ram }));
    expect(e2.code).toBe('EIOVARANGE');
    expect(e2.message).toContain('[0xfee00000, 0xfee01000)');
    expect(e2.hint).toContain('[0x0, 0xfedfffff]');
    using big = GuestRam.create(0x200000);
    const e3 = caught(() => container.mapDma({ iova: 0xfed00000, size: 0x200000, memory: big }));
    expect(e3.code).toBe('EIOVARANGE');
    expect(e3.message).toContain('[0x0, 0xfedfffff]');
    const e4 = caught(() => container.mapDma({ iova: 0x14000, size: 0x8000, memory: ram }));
    expect(e4.code).toBe('EOVERLAP');
    expect(e4.message).toContain('[0x10000, 0x18000)');
    expect(() => container.mapDma({ iova: 0x20000, size: 0x1000, memory: ram, offset: 0x10000 })).toThrow(
      RangeError,
    );

    // Half a mapping, a gap, or nothing at all: refused before the kernel sees it.
    expect(caught(() => container.unmapDma(0x10000, 0x4000)).code).toBe('ENOTMAPPED');
    expect(caught(() => container.unmapDma(0x40000, 0x1000)).code).toBe('ENOTMAPPED');
    expect(caught(() => container.unmapDma(0x10000, 0x10000)).code).toBe('ENOTMAPPED');
    expect(container.dmaMappings()).toHaveLength(2);
    // Two whole neighbours in one call.
    expect(container.unmapDma(0x10000, 0xc000)).toBe(0xc000);
    expect(container.dmaMappings()).toEqual([]);
    expect(container.iommuInfo().dmaAvail).toBe(65535);

    container.mapDma({ iova: 0x10000, size: 0x1000, memory: ram });
    container.close();
    expect(caught(() => container.mapDma({ iova: 0, size: 0x1000, memory: ram })).code).toBe('ECLOSED');
  });

  it('close() unmaps what it mapped even while the group keeps the IOMMU alive', () => {
    // type1 counts pinned pages in the process's locked_vm (VmLck), whatever the capabilities.
    const vmLck = (): number =>
      Number(/^VmLck:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
    container.setIommu();
    const base = vmLck();
    container.mapDma({ iova: 0x100000, size: 0x10000, memory: ram });
    container.mapDma({ iova: 0x200000, size: 0x8000, memory: ram });
    expect(vmLck() - base).toBe(0x18000 / 1024);
    container.close();
    expect(vmLck()).toBe(base);
    expect(container.dmaMappings()).toEqual([]);
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

describeDevice('edu', 'RLIMIT_MEMLOCK without CAP_IPC_LOCK', (bdf) => {
  it('fails the map with ENOMEM and a hint, and leaves nothing mapped', () => {
    const size = 8 * 2 ** 20;
    const r = runWithSmallMemlock('memlock-child.js', bdf(), String(size));
    expect(r.mapped).toBeUndefined();
    expect([r.code, r.errno]).toEqual(['ENOMEM', -12]);
    expect(r.hint).toContain(`needed ${size} bytes`);
    expect(r.hint).toContain('RLIMIT_MEMLOCK is 1024 KiB');
    expect(r.hint).toContain('CAP_IPC_LOCK');
    expect(r.recorded).toBe(0);
    expect(r.after).toBe(r.before);
    expect(r.kernelUnmapped).toBe(0);
  });
});
