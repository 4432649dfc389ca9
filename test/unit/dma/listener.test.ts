import { once } from 'node:events';

import {
  DmaCommitError,
  DmaListener,
  UNMAP_ATTEMPTS,
  type DmaErrorEvent,
  type DmaSkip,
} from '../../../lib/dma/listener';
import {
  AddressSpace,
  BufferMemory,
  GuestErrorSink,
  MemoryRegion,
  transaction,
  type GuestError,
} from '../../../lib/memory';
import { registerDmaRegion } from '../../../lib/dma/dma-buffers';
import { FakeContainer, FakeDeviceMemory, FakeError, FakeIoas, FakeRam } from './fake-container';

function setup(): {
  c: FakeContainer;
  root: MemoryRegion;
  as: AddressSpace;
  l: DmaListener;
  warnings: DmaSkip[];
} {
  const c = new FakeContainer();
  const root = MemoryRegion.container('system', 2 ** 40);
  const as = new AddressSpace('memory', root, { log: null });
  const l = new DmaListener(c, as, { log: null });
  const warnings: DmaSkip[] = [];
  l.on('warning', (w) => warnings.push(w));
  return { c, root, as, l, warnings };
}

const ram = new FakeRam(0x100000);

function ramRegion(name: string, offset: number, size: number): MemoryRegion {
  return MemoryRegion.ram(name, size, ram.window(offset, size));
}

describe('DmaListener decisions', () => {
  it('maps RAM at IOVA = guest-physical address, read-only RAM read-only', () => {
    const { c, root, l } = setup();
    const a = ramRegion('ram-a', 0, 0x4000);
    const b = ramRegion('rom-b', 0x4000, 0x2000);
    b.setReadonly(true);
    transaction(() => {
      root.addSubregion(a, 0x10000);
      root.addSubregion(b, 0x20000);
    });
    expect(c.state()).toEqual([
      [0x10000, 0x4000, 0, true],
      [0x20000, 0x2000, 0x4000, false],
    ]);
    expect(l.mappings()).toEqual([
      { iova: 0x10000, size: 0x4000, region: 'ram-a', kind: 'ram', readonly: false },
      { iova: 0x20000, size: 0x2000, region: 'rom-b', kind: 'ram', readonly: true },
    ]);
    expect(l.stats).toMatchObject({ mappedBytes: 0x6000, mappingCount: 2, skippedCount: 0 });
  });

  it('maps a lazily-backed region by the region, never making its buffer', () => {
    const { c, root } = setup();
    let made = 0;
    const lazy = MemoryRegion.ram('lazy', 0x4000, () => {
      made++;
      return new ArrayBuffer(0x4000);
    });
    registerDmaRegion(lazy, ram, 0x8000);
    root.addSubregion(MemoryRegion.alias('lazy-tail', lazy, 0x1000, 0x3000), 0x40000);
    expect(c.maps.map((m) => [m.iova, m.size, m.offset, m.memory])).toEqual([[0x40000, 0x3000, 0x9000, ram]]);
    expect(made).toBe(0);
    expect(lazy.allocatedBacking).toBeNull();
    // Made later by a guest access, the buffer does not change what is mapped: the region says it.
    root.removeSubregion(root.subregions[0]);
    root.addSubregion(lazy, 0x40000);
    expect(lazy.backing).toBeInstanceOf(ArrayBuffer);
    expect(made).toBe(1);
    expect(c.state()).toEqual([[0x40000, 0x4000, 0x8000, true]]);
  });

  it('skips RAM whose address and host offset disagree below the page, naming the absolute range', () => {
    const { c, root, l, warnings } = setup();
    root.addSubregion(ramRegion('odd', 0, 0x3000), 0x1_0000_0800);
    expect(c.maps).toEqual([]);
    expect(warnings.map((w) => [w.start, w.size, w.region, w.reason])).toEqual([
      [0x1_0000_0800, 0x3000, 'odd', 'unaligned'],
    ]);
    expect(warnings[0].message).toContain('[0x100000800, 0x100003800)');
    expect(warnings[0].message).toContain("'odd'");
    expect(l.skipped()).toEqual(warnings);
  });

  it('maps the page-aligned interior of congruent RAM and reports the trimmed edges', () => {
    const { c, root, warnings } = setup();
    root.addSubregion(ramRegion('edges', 0x800, 0x3000), 0x10800);
    expect(c.state()).toEqual([[0x11000, 0x2000, 0x1000, true]]);
    expect(warnings.map((w) => [w.start, w.size, w.reason])).toEqual([
      [0x10800, 0x800, 'trimmed'],
      [0x13000, 0x800, 'trimmed'],
    ]);
  });

  it('skips sub-page RAM, and a hole punched by an I/O region splits the mapping', () => {
    const { c, root, warnings } = setup();
    root.addSubregion(ramRegion('tiny', 0, 0x800), 0x40000);
    expect(warnings.map((w) => w.reason)).toEqual(['sub-page']);
    const big = ramRegion('big', 0x10000, 0x10000);
    const io = MemoryRegion.io('regs', 0x1000, { read: () => 0, write: () => undefined });
    transaction(() => {
      root.addSubregion(big, 0x80000);
      root.addSubregion(io, 0x84000, 1);
    });
    expect(c.state()).toEqual([
      [0x80000, 0x4000, 0x10000, true],
      [0x85000, 0xb000, 0x15000, true],
    ]);
  });

  it('maps a page-aligned RAM-device section and skips an unaligned one with a warning', () => {
    const { c, root, warnings, l } = setup();
    const bar = MemoryRegion.ramDevice('0000:00:03.0 BAR 0 mmaps[0]', 0x2000, new FakeDeviceMemory(0x2000));
    const small = MemoryRegion.ramDevice('0000:00:04.0 BAR 1 mmaps[0]', 0x100, new FakeDeviceMemory(0x1000));
    transaction(() => {
      root.addSubregion(bar, 0xfe000000);
      root.addSubregion(small, 0xfe100100);
    });
    expect(c.state()).toEqual([[0xfe000000, 0x2000, 0, true]]);
    expect(warnings.map((w) => [w.start, w.size, w.region, w.kind, w.reason])).toEqual([
      [0xfe100100, 0x100, '0000:00:04.0 BAR 1 mmaps[0]', 'ram-device', 'unaligned-device'],
    ]);
    expect(warnings[0].message).toContain('[0xfe100100, 0xfe100200)');
    expect(l.mappings()[0].kind).toBe('ram-device');
  });

  it('skips memory the IOMMU cannot be given: JavaScript-only RAM and device memory', () => {
    const { c, root, warnings } = setup();
    transaction(() => {
      root.addSubregion(MemoryRegion.ram('js-ram', 0x1000), 0x1000);
      root.addSubregion(MemoryRegion.ramDevice('fake-bar', 0x1000, new BufferMemory(0x1000)), 0x3000);
    });
    expect(c.maps).toEqual([]);
    expect(warnings.map((w) => [w.region, w.reason])).toEqual([
      ['js-ram', 'no-host-memory'],
      ['fake-bar', 'no-host-memory'],
    ]);
  });

  it('does not fail the commit when a RAM-device map fails: warning and dma-error', () => {
    const { c, root, l, warnings } = setup();
    const errors: DmaErrorEvent[] = [];
    l.on('dma-error', (e) => errors.push(e));
    c.failMap = (req) => (req.iova === 0xfe000000 ? new FakeError('EFAULT', 'no pfns') : undefined);
    transaction(() => {
      root.addSubregion(MemoryRegion.ramDevice('bar', 0x1000, new FakeDeviceMemory(0x1000)), 0xfe000000);
      root.addSubregion(ramRegion('ram', 0, 0x1000), 0);
    });
    expect(c.state()).toEqual([[0, 0x1000, 0, true]]);
    expect(errors.map((e) => [e.start, e.size, e.region, e.op])).toEqual([
      [0xfe000000, 0x1000, 'bar', 'map'],
    ]);
    expect(warnings.map((w) => [w.start, w.reason])).toEqual([[0xfe000000, 'map-failed']]);
    expect(l.stats).toMatchObject({ fatalCount: 0, dmaErrorCount: 1, mappingCount: 1 });
    // Removing it unmaps nothing: it was never mapped.
    const before = c.log.length;
    root.removeSubregion(root.subregions.find((r) => r.name === 'bar')!);
    expect(c.log.slice(before)).toEqual([]);
  });

  it('asks the backend once for a BAR piece it refused with EFAULT; other refusals are asked again', () => {
    const { c, root, l, warnings } = setup();
    const errors: DmaErrorEvent[] = [];
    l.on('dma-error', (e) => errors.push(e));
    c.failMap = (req) =>
      req.iova === 0xfe000000
        ? new FakeError('EFAULT', 'cannot pin')
        : req.iova === 0xfd000000
          ? new FakeError('ENOSPC', 'no room')
          : undefined;
    const bar = MemoryRegion.ramDevice('bar', 0x1000, new FakeDeviceMemory(0x1000));
    const other = MemoryRegion.ramDevice('other', 0x1000, new FakeDeviceMemory(0x1000));
    const calls = (iova: number): number => c.log.filter((x) => x.op === 'map' && x.iova === iova).length;
    // Placed, then decode toggled twice: the same pieces come back.
    for (let i = 0; i < 3; i++) {
      transaction(() => {
        root.addSubregion(bar, 0xfe000000);
        root.addSubregion(other, 0xfd000000);
      });
      transaction(() => {
        root.removeSubregion(bar);
        root.removeSubregion(other);
      });
    }
    expect(calls(0xfe000000)).toBe(1);
    expect(calls(0xfd000000)).toBe(3);
    expect(errors.map((e) => e.region).sort()).toEqual(['bar', 'other', 'other', 'other']);
    expect(warnings.filter((w) => w.region === 'bar').map((w) => w.reason)).toEqual([
      'map-failed',
      'map-failed',
      'map-failed',
    ]);
    expect(l.stats).toMatchObject({ dmaErrorCount: 4, unaskedMaps: 2, mappingCount: 0 });
    // Moved, it is another piece: asked again.
    transaction(() => root.addSubregion(bar, 0xfe001000));
    expect(calls(0xfe001000)).toBe(1);
  });

  it('on iommufd, asks for no BAR after one was refused with EFAULT: each is a skip, reported once', () => {
    const c = new FakeIoas();
    const root = MemoryRegion.container('system', 2 ** 40);
    const sink = new GuestErrorSink({ log: null });
    const reports: GuestError[] = [];
    sink.on('guest-error', (e) => reports.push(e));
    const l = new DmaListener(c, new AddressSpace('memory', root, { log: null }), { guestErrors: sink });
    expect(l.backend).toBe('iommufd');
    // iommufd pins what it maps; a BAR's mapping has no pages.
    c.failMap = (req) =>
      (req.memory as Partial<FakeDeviceMemory>).deviceMemory
        ? new FakeError('EFAULT', 'IOMMU_IOAS_MAP failed: Bad address')
        : undefined;
    const bar = (name: string, size: number): MemoryRegion =>
      MemoryRegion.ramDevice(name, size, new FakeDeviceMemory(size, true));
    const a = bar('e1000e BAR 0 mmaps[0]', 0x20000);
    const b = bar('e1000e BAR 1 mmaps[0]', 0x20000);
    const d = bar('rtl8139 BAR 1 mmaps[0]', 0x1000);
    // A ram-device region that is not device memory (a memfd, say) is still asked.
    const shm = MemoryRegion.ramDevice('shm', 0x1000, new FakeDeviceMemory(0x1000));
    transaction(() => {
      root.addSubregion(a, 0xc0080000);
      root.addSubregion(b, 0xc00a0000);
      root.addSubregion(d, 0xc00c4000);
      root.addSubregion(shm, 0xd0000000);
    });
    const maps = (): number[] => c.log.filter((x) => x.op === 'map').map((x) => x.iova);
    expect(maps()).toEqual([0xc0080000, 0xd0000000]);
    expect(c.state()).toEqual([[0xd0000000, 0x1000, 0, true]]);
    // Recorded exactly: three skips, one asked and two unasked, and one report with the hint.
    expect(l.skipped().map((x) => [x.start, x.size, x.region, x.reason])).toEqual([
      [0xc0080000, 0x20000, 'e1000e BAR 0 mmaps[0]', 'map-failed'],
      [0xc00a0000, 0x20000, 'e1000e BAR 1 mmaps[0]', 'map-failed'],
      [0xc00c4000, 0x1000, 'rtl8139 BAR 1 mmaps[0]', 'map-failed'],
    ]);
    expect(l.skipped()[1].message).toMatch(
      /map not asked: the kernel refused device memory \('e1000e BAR 0 mmaps\[0\]'\) with EFAULT before/,
    );
    expect(l.skipped()[2].error).toMatchObject({ code: 'EFAULT' });
    expect(l.stats).toMatchObject({ dmaErrorCount: 1, unaskedMaps: 2, mapCalls: 2, skippedCount: 3 });
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ kind: 'dma-map-failed', where: 'e1000e BAR 0 mmaps[0]' });
    expect(reports[0].message).toMatch(/no BAR on this IOAS is asked again/);
    expect(reports[0].hint).toMatch(/every BAR on this IOAS.*type1/);
    // Moved and toggled, the BARs are skipped again, unasked and unreported.
    transaction(() => {
      root.removeSubregion(a);
      root.removeSubregion(b);
    });
    transaction(() => {
      root.addSubregion(a, 0xe0000000);
      root.addSubregion(b, 0xc00a0000);
    });
    expect(maps()).toEqual([0xc0080000, 0xd0000000]);
    expect(l.skipped().map((x) => x.start)).toEqual([0xc00a0000, 0xc00c4000, 0xe0000000]);
    expect(l.stats).toMatchObject({ dmaErrorCount: 1, unaskedMaps: 4, skippedCount: 3 });
    expect(reports).toHaveLength(1);
    l.close();
  });

  it('on iommufd, asks for no other piece of a region that is not device memory once it was refused', () => {
    const c = new FakeIoas();
    const root = MemoryRegion.container('system', 2 ** 40);
    const l = new DmaListener(c, new AddressSpace('memory', root, { log: null }), { log: null });
    c.failMap = (req) => (req.size === 0x2000 ? new FakeError('EFAULT', 'cannot pin') : undefined);
    const r = MemoryRegion.ramDevice('window', 0x2000, new FakeDeviceMemory(0x2000));
    const other = MemoryRegion.ramDevice('other', 0x1000, new FakeDeviceMemory(0x1000));
    transaction(() => root.addSubregion(r, 0x100000));
    transaction(() => {
      root.removeSubregion(r);
      root.addSubregion(r, 0x200000);
      root.addSubregion(other, 0x300000);
    });
    // The moved region is not asked again; another region is, and is mapped.
    expect(c.log.filter((x) => x.op === 'map').map((x) => x.iova)).toEqual([0x100000, 0x300000]);
    expect(l.skipped().map((x) => [x.start, x.region])).toEqual([[0x200000, 'window']]);
    expect(l.skipped()[0].message).toMatch(/no piece of this region is asked again/);
    expect(l.stats).toMatchObject({ dmaErrorCount: 1, unaskedMaps: 1, mappingCount: 1 });
    l.close();
  });

  it('undoes the whole commit when RAM cannot be mapped, and applies it on the next commit', () => {
    const { c, root, l } = setup();
    const bar = MemoryRegion.ramDevice('bar', 0x2000, new FakeDeviceMemory(0x2000));
    const low = ramRegion('low', 0, 0x8000);
    transaction(() => {
      root.addSubregion(bar, 0x100000);
      root.addSubregion(low, 0);
    });
    const before = c.state();
    const fatals: DmaCommitError[] = [];
    l.on('fatal', (e) => fatals.push(e));
    c.failMap = (req) => (req.iova === 0x200000 ? new FakeError('ENOMEM', 'pinning failed') : undefined);
    const high = ramRegion('high', 0x8000, 0x4000);
    transaction(() => {
      bar.setOffset(0x300000); // an unmap and a map before the failure
      low.setSize(0x4000);
      root.addSubregion(high, 0x200000);
    });
    expect(c.state()).toEqual(before);
    expect(fatals).toHaveLength(1);
    expect(fatals[0]).toMatchObject({ code: 'EDMACOMMIT', start: 0x200000, size: 0x4000, region: 'high' });
    expect(fatals[0].message).toContain('[0x200000, 0x204000)');
    expect(fatals[0].rollbackErrors).toEqual([]);
    expect(l.pending).toBe(true);
    expect(l.lastFatal).toBe(fatals[0]);
    expect(l.stats).toMatchObject({ fatalCount: 1, mappingCount: 2, mappedBytes: 0xa000 });
    // One record: what the listener lists is what the kernel holds, the mappings put back included.
    expect(l.mappings().map((m) => [m.iova, m.size])).toEqual(before.map(([iova, size]) => [iova, size]));
    expect(l.mappings()).toHaveLength(l.stats.mappingCount);

    c.failMap = null;
    root.addSubregion(ramRegion('later', 0x10000, 0x1000), 0x400000);
    expect(l.pending).toBe(false);
    expect(c.state()).toEqual([
      [0, 0x4000, 0, true],
      [0x200000, 0x4000, 0x8000, true],
      [0x300000, 0x2000, 0, true],
      [0x400000, 0x1000, 0x10000, true],
    ]);
    expect(c.inexactUnmaps).toEqual([]);
  });

  it('unmaps exactly what it recorded on removal and on close, never a skipped section', () => {
    const { c, root, l } = setup();
    const a = ramRegion('a', 0x800, 0x3000);
    const dev = MemoryRegion.ramDevice('sub', 0x100, new FakeDeviceMemory(0x100));
    transaction(() => {
      root.addSubregion(a, 0x10800);
      root.addSubregion(dev, 0x20000);
    });
    root.removeSubregion(a);
    root.removeSubregion(dev);
    expect(c.log.filter((x) => x.op === 'unmap')).toEqual([
      { op: 'unmap', iova: 0x11000, size: 0x2000, result: 0x2000 },
    ]);
    root.addSubregion(ramRegion('b', 0, 0x1000), 0);
    l.close();
    expect(c.maps).toEqual([]);
    expect(c.inexactUnmaps).toEqual([]);
    expect(l.stats).toMatchObject({ mappingCount: 0, mappedBytes: 0 });
    // Closed: later changes reach nothing.
    root.addSubregion(ramRegion('c', 0, 0x1000), 0x8000);
    expect(c.maps).toEqual([]);
  });

  it('forgets at once an unmap the container has no mapping for, reporting it once', () => {
    const { c, root, l } = setup();
    const errors: DmaErrorEvent[] = [];
    l.on('dma-error', (e) => errors.push(e));
    const bar = MemoryRegion.ramDevice('bar', 0x2000, new FakeDeviceMemory(0x2000));
    transaction(() => {
      root.addSubregion(ramRegion('ram', 0, 0x4000), 0);
      root.addSubregion(bar, 0x100000);
    });
    // The last group left: the kernel released every mapping, and the container its IOMMU.
    c.loseIommu();
    bar.setOffset(0x200000);
    expect(errors.map((e) => [e.start, e.op, e.outcome, (e.error as FakeError).code])).toEqual([
      [0x100000, 'unmap', 'dropped', 'ENOIOMMU'],
      [0x200000, 'map', undefined, 'ENOIOMMU'], // nor can its new place be mapped
    ]);
    expect(l.pending).toBe(false);
    expect(l.stats).toMatchObject({ orphanCount: 0, droppedUnmaps: 1, dmaErrorCount: 2 });
    // Later commits neither try it again nor report it again.
    const before = c.log.length;
    root.addSubregion(MemoryRegion.io('io', 0x10, { read: () => 0, write: () => undefined }), 0x300000);
    bar.setEnabled(false);
    expect(c.log.slice(before)).toEqual([]);
    expect(errors).toHaveLength(2);
  });

  it('tries a refused unmap again on the next commits, a bounded number of times, reporting it twice', () => {
    const lines: string[] = [];
    const c = new FakeContainer();
    const root = MemoryRegion.container('system', 2 ** 40);
    const l = new DmaListener(c, new AddressSpace('m', root, { log: null }), {
      log: (x) => lines.push(x),
      logIntervalMs: 0,
    });
    const errors: DmaErrorEvent[] = [];
    l.on('dma-error', (e) => errors.push(e));
    const a = ramRegion('a', 0, 0x1000);
    const b = ramRegion('b', 0x1000, 0x1000);
    transaction(() => {
      root.addSubregion(a, 0x10000);
      root.addSubregion(b, 0x20000);
    });
    c.failUnmap = () => new FakeError('EINVAL', 'refused');
    root.removeSubregion(a);
    root.removeSubregion(b);
    expect(errors.map((e) => [e.start, e.outcome])).toEqual([
      [0x10000, 'retry'],
      [0x20000, 'retry'],
    ]);
    expect(lines[0]).toMatch(/unmap of \[0x10000, 0x11000\) \('a'\) failed: refused; tried again/);
    expect(l.stats).toMatchObject({ orphanCount: 2, droppedUnmaps: 0, mappingCount: 2 });
    // The kernel gives way for 'a' on the next commit; 'b' stays refused.
    c.failUnmap = (iova) => (iova === 0x20000 ? new FakeError('EINVAL', 'refused') : undefined);
    const tries = (): number => c.log.filter((x) => x.op === 'unmap' && x.iova === 0x20000).length;
    const commit = (i: number): void =>
      root.addSubregion(ramRegion(`t${i}`, 0x2000, 0x1000), 0x100000 * (i + 1));
    commit(0);
    expect(c.maps.map((m) => m.iova)).toEqual([0x20000, 0x100000]);
    expect(l.stats).toMatchObject({ orphanCount: 1, mappingCount: 2 });
    for (let i = 1; i < 10; i++) commit(i);
    expect(tries()).toBe(UNMAP_ATTEMPTS);
    expect(errors.map((e) => [e.start, e.outcome])).toEqual([
      [0x10000, 'retry'],
      [0x20000, 'retry'],
      [0x20000, 'dropped'],
    ]);
    expect(lines.at(-1)).toContain(`given up after ${UNMAP_ATTEMPTS} tries: the container still records it`);
    expect(l.pending).toBe(false);
    expect(l.stats).toMatchObject({ orphanCount: 0, droppedUnmaps: 1, mappingCount: 10, dmaErrorCount: 3 });
    // Only the container still has it.
    expect(c.maps[0]).toMatchObject({ iova: 0x20000, size: 0x1000 });
  });

  it('ignores I/O sections and maps what is already there when it starts', () => {
    const c = new FakeContainer();
    const root = MemoryRegion.container('system', 2 ** 32);
    root.addSubregion(MemoryRegion.io('io', 0x1000, { read: () => 0, write: () => undefined }), 0);
    root.addSubregion(ramRegion('r', 0, 0x1000), 0x1000);
    const l = new DmaListener(c, new AddressSpace('m', root, { log: null }), { log: null });
    expect(c.state()).toEqual([[0x1000, 0x1000, 0, true]]);
    expect(l.skipped()).toEqual([]);
  });

  it('reports each skip once to its sink, logged, and survives a throwing event handler', () => {
    const lines: string[] = [];
    const c = new FakeContainer();
    const root = MemoryRegion.container('system', 2 ** 32);
    const l = new DmaListener(c, new AddressSpace('m', root, { log: null }), { log: (x) => lines.push(x) });
    l.on('warning', () => {
      throw new Error('handler bug');
    });
    transaction(() => {
      for (let i = 0; i < 5; i++) root.addSubregion(ramRegion(`t${i}`, 0, 0x100), i * 0x10000);
    });
    expect(l.stats.warningCount).toBe(5);
    // The first skip and the first throw in full; the rest wait for the summary interval.
    expect(lines).toEqual([
      expect.stringMatching(/^DMA: skipped ram \[0x0, 0x100\) of 't0'.* \[dma\/dma-skipped, skipped\]/),
      "DMA: a 'warning' listener threw: handler bug [dma/listener-threw, ignored]",
    ]);
    expect(l.guestErrors.counts).toEqual({ 'dma/dma-skipped': 5, 'dma/listener-threw': 5 });
  });

  it('reports a skip re-planned by later commits once, with its fields', () => {
    const sink = new GuestErrorSink({ log: null });
    const seen: GuestError[] = [];
    sink.on('guest-error', (e) => seen.push(e));
    const c = new FakeContainer();
    const root = MemoryRegion.container('system', 2 ** 32);
    const l = new DmaListener(c, new AddressSpace('m', root, { log: null }), { guestErrors: sink });
    const odd = ramRegion('odd', 0, 0x100);
    root.addSubregion(odd, 0x10000);
    // Another commit that re-renders the view plans the same section again.
    root.addSubregion(ramRegion('other', 0, 0x1000), 0x20000);
    odd.setEnabled(false);
    odd.setEnabled(true);
    expect(l.stats.warningCount).toBeGreaterThan(1);
    expect(seen).toEqual([
      expect.objectContaining({
        source: 'dma',
        kind: 'dma-skipped',
        where: 'odd',
        address: 0x10000,
        size: 0x100,
        action: 'skipped',
        detail: expect.objectContaining({ reason: 'sub-page', region: 'odd' }),
      }),
    ]);
    expect(l.guestErrors).toBe(sink);
    expect(() => new DmaListener(c, l.space, { guestErrors: sink, log: null })).toThrow(TypeError);
    l.close();
  });

  it('refuses bad options with typed errors', () => {
    const root = MemoryRegion.container('system', 2 ** 32);
    const as = new AddressSpace('m', root, { log: null });
    expect(() => new DmaListener({} as never, as)).toThrow(TypeError);
    expect(() => new DmaListener(new FakeContainer(), as, { hostPageSize: 3000 })).toThrow(RangeError);
    expect(() => new DmaListener(new FakeContainer(), as, { logIntervalMs: -1 })).toThrow(RangeError);
    const l = new DmaListener(new FakeContainer(), as, { log: null });
    const seen: DmaSkip[] = [];
    const fn = (w: DmaSkip): number => seen.push(w);
    l.on('warning', fn).off('warning', fn);
    root.addSubregion(ramRegion('x', 0, 0x100), 0);
    expect(seen).toEqual([]);
    expect(l.stats.warningCount).toBe(1);
  });
});

describe('DmaListener start', () => {
  it('throws when RAM already in the space cannot be mapped, and leaves nothing mapped', () => {
    const c = new FakeContainer();
    const root = MemoryRegion.container('system', 2 ** 40);
    root.addSubregion(ramRegion('ram-low', 0, 0x4000), 0);
    root.addSubregion(ramRegion('ram-high', 0x4000, 0x4000), 0x100000);
    const as = new AddressSpace('memory', root, { log: null });
    c.failMap = (req) => (req.iova === 0x100000 ? new FakeError('ENOMEM', 'injected') : undefined);
    let err: unknown;
    try {
      new DmaListener(c, as, { log: null });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DmaCommitError);
    expect(err).toMatchObject({ start: 0x100000, size: 0x4000, region: 'ram-high' });
    expect(c.maps).toEqual([]);
    // It let go of the space: later commits reach no listener.
    c.failMap = null;
    root.addSubregion(ramRegion('ram-more', 0x8000, 0x1000), 0x200000);
    expect(c.log.filter((x) => x.iova === 0x200000)).toEqual([]);
    as.close();
  });
});

describe('node:events', () => {
  it("delivers 'warning' to events.once, and a listener that throws does not stop the commit", async () => {
    const { root, l } = setup();
    l.on('warning', () => {
      throw new Error('listener bug');
    });
    const next = once(l, 'warning');
    root.addSubregion(MemoryRegion.ramDevice('odd', 0x100, new FakeDeviceMemory(0x1000)), 0xfe100100);
    const [w] = (await next) as [DmaSkip];
    expect([w.region, w.reason]).toEqual(['odd', 'unaligned-device']);
    // setup's listener and the throwing one stay; once's is gone.
    expect(l.listenerCount('warning')).toBe(2);
  });
});
