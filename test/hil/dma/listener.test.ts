import { closeSync, openSync, readSync } from 'node:fs';

import { Container, Ioas, Machine, VfioError, type GuestError } from '../../../lib';
import { native } from '../../../lib/native';
import { containerHandle } from '../../../lib/vfio/container';
import { DMA_HANDLE, type DmaMemory } from '../../../lib/vfio/dma-types';
import { iommufdHandle } from '../../../lib/vfio/iommufd';
import { placeBar } from '../../support/pci-helpers';
import { describeBackends, machineOn } from '../backends';
import { describeDevice, ivshmemFile } from '../hil';
import { eduDma, pattern } from './edu-dma';

const MiB = 2 ** 20;
const RAM = 16 * MiB;
const hole = { start: RAM, size: 2 ** 32 - RAM };

/**
 * On iommufd the BAR section at [`at`, `at + size`) was refused by the kernel (EFAULT: a BAR mapping
 * has no pages to pin) and is a `map-failed` skip with the hint that says so.
 */
function expectBarRefused(m: Machine, at: number, size: number): void {
  const skip = m.dma!.skipped().find((s) => s.start === at);
  expect(skip).toMatchObject({ size, kind: 'ram-device', reason: 'map-failed' });
  expect(skip!.error).toMatchObject({
    code: 'EFAULT',
    op: 'IOMMU_IOAS_MAP',
    hint: expect.stringMatching(/type1/),
  });
}

/** A machine on the backend of the run the test is in. */
function machine(): Machine {
  return machineOn({ ramSize: RAM, pciHole: hole, log: null });
}

/**
 * The kernel's side of a backend, bypassing the record: unmap (bytes unmapped; 0 where nothing is
 * mapped: type1 says 0, iommufd ENOENT) and map.
 */
function kernelOf(dma: Container | Ioas) {
  if (dma instanceof Container) {
    const h = containerHandle(dma);
    return {
      unmap: (iova: number, size: number) => native.vfioUnmapDma(h, iova, size),
      map: (m: DmaMemory, offset: number, iova: number, size: number) =>
        native.vfioMapDma(h, m[DMA_HANDLE](), offset, iova, size, true, true),
    };
  }
  const h = iommufdHandle(dma.iommufd, 'test');
  return {
    unmap: (iova: number, size: number) => {
      try {
        return native.iommufdIoasUnmap(h, dma.id, iova, size);
      } catch (e) {
        if (e instanceof VfioError && e.code === 'ENOENT') return 0;
        throw e;
      }
    },
    map: (m: DmaMemory, offset: number, iova: number, size: number) =>
      native.iommufdIoasMap(h, dma.id, m[DMA_HANDLE](), offset, iova, size, true, true),
  };
}

/** Memory decode, I/O decode and bus mastering. */
function enable(m: Machine, i: number): void {
  m.devices[i].configWrite(0x04, 2, 0x0007);
}

function hostFile(offset: number, n: number): Uint8Array {
  if (!ivshmemFile) throw new Error('VFIO_BRIDGE_HIL_IVSHMEM_FILE is not set');
  const fd = openSync(ivshmemFile, 'r');
  try {
    const buf = Buffer.alloc(n);
    readSync(fd, buf, 0, n, offset);
    return new Uint8Array(buf);
  } finally {
    closeSync(fd);
  }
}

describeBackends('edu', 'DMA through the listener', (bdf, backend) => {
  it('round-trips bytes from guest RAM through edu back to another guest-RAM address', async () => {
    using m = machine();
    m.addDevice(bdf(), { log: null });
    expect([m.backend, m.dma!.backend, m.container!.kind]).toEqual([backend, backend, backend]);
    const bar0 = 0x8000_0000;
    placeBar(m.devices[0], 0, bar0);
    enable(m, 0);
    const ram = { iova: 0, size: RAM, region: 'ram-below-4g', kind: 'ram', readonly: false };
    const bar = {
      iova: bar0,
      size: MiB,
      region: `${bdf()} BAR 0 mmaps[0]`,
      kind: 'ram-device',
      readonly: false,
    };
    // iommufd pins what it maps, and a BAR mapping has no pages: it stays out (reported, not fatal).
    expect(m.dma!.mappings()).toEqual(backend === 'type1' ? [ram, bar] : [ram]);
    if (backend === 'iommufd') expectBarRefused(m, bar0, MiB);
    // Device.map says a BAR is device memory: what the listener takes a refusal on iommufd to stand for.
    expect((m.devices[0].bars[0]!.mmaps[0].memory as { deviceMemory?: unknown }).deviceMemory).toBe(true);
    const data = pattern(4095, 1);
    new Uint8Array(m.ram.buffer(0x10000, 4095)).set(data);
    await eduDma(m.bus, bar0, 0x10000, 4095, false);
    await eduDma(m.bus, bar0, 0x23000, 4095, true);
    expect(new Uint8Array(m.ram.buffer(0x23000, 4095))).toEqual(data);
    expect(m.memorySlots()).toEqual([{ gpa: 0, size: RAM, hostAddress: m.ram.hostAddress }]);
    // The listener mapped what it says, and nothing was skipped or failed.
    expect(m.dma!.stats).toMatchObject(
      backend === 'type1'
        ? { mappingCount: 2, mappedBytes: RAM + MiB, fatalCount: 0, dmaErrorCount: 0 }
        : { mappingCount: 1, mappedBytes: RAM, fatalCount: 0, dmaErrorCount: 1 },
    );
    // Memory decode off and on twice: the BAR comes back each time, the same piece of the same
    // mapping. type1 maps it again; iommufd's refusal (no pages to pin) is not asked again.
    for (let i = 0; i < 2; i++) {
      m.devices[0].configWrite(0x04, 2, 0x0004);
      enable(m, 0);
    }
    expect(m.dma!.mappings()).toEqual(backend === 'type1' ? [ram, bar] : [ram]);
    expect(m.dma!.stats).toMatchObject(
      backend === 'type1' ? { dmaErrorCount: 0, unaskedMaps: 0 } : { dmaErrorCount: 1, unaskedMaps: 2 },
    );
  });
});

describeBackends('edu', 'the machine layout', (bdf) => {
  it('puts RAM below the PCI hole and the rest above 4 GiB, and maps both at IOVA = GPA', () => {
    using m = machineOn({
      ramSize: 16 * MiB,
      pciHole: { start: 8 * MiB, size: 2 ** 32 - 8 * MiB },
      log: null,
    });
    expect(m.ramRanges.map((r) => [r.gpa, r.size, r.offset, r.region.name])).toEqual([
      [0, 8 * MiB, 0, 'ram-below-4g'],
      [2 ** 32, 8 * MiB, 8 * MiB, 'ram-above-4g'],
    ]);
    expect(m.dma).toBeNull();
    m.addDevice(bdf(), { log: null });
    expect(m.dma!.mappings().map((x) => [x.iova, x.size, x.region])).toEqual([
      [0, 8 * MiB, 'ram-below-4g'],
      [2 ** 32, 8 * MiB, 'ram-above-4g'],
    ]);
    expect(m.container!.dmaMappings().map((x) => [x.iova, x.offset])).toEqual([
      [0, 0],
      [2 ** 32, 8 * MiB],
    ]);
    m.gpaView(2 ** 32 + 8, 4).setUint32(0, 0xabcdef01, true);
    expect(m.ram.view(8 * MiB + 8, 4).getUint32(0, true)).toBe(0xabcdef01);
    expect(() => m.gpaView(8 * MiB - 4, 8)).toThrow(RangeError);
  });
});

describeBackends('ivshmem', 'peer-to-peer DMA into a BAR', (ivBdf, backend) => {
  describeDevice('edu', 'edu writes into ivshmem BAR 2', (eduBdf) => {
    it("lands edu's bytes in ivshmem's host backing file", async () => {
      using m = machine();
      m.addDevice(eduBdf(), { log: null });
      m.addDevice(ivBdf(), { log: null });
      const bar0 = 0x8000_0000;
      // Below 256 MiB: edu masks DMA addresses to 28 bits.
      const bar2 = 0x0800_0000;
      placeBar(m.devices[0], 0, bar0);
      placeBar(m.devices[1], 2, bar2);
      enable(m, 0);
      enable(m, 1);
      const p2p = m.dma!.mappings().find((x) => x.iova === bar2);
      if (backend === 'iommufd') {
        // No peer-to-peer on iommufd: ivshmem's BAR is refused, and said so.
        expect(p2p).toBeUndefined();
        expectBarRefused(m, bar2, MiB);
        return;
      }
      expect(p2p).toEqual({
        iova: bar2,
        size: MiB,
        region: `${ivBdf()} BAR 2 mmaps[0]`,
        kind: 'ram-device',
        readonly: false,
      });
      const data = pattern(4000, 2);
      new Uint8Array(m.ram.buffer(0x30000, data.length)).set(data);
      await eduDma(m.bus, bar0, 0x30000, data.length, false);
      await eduDma(m.bus, bar0, bar2 + 0x3000, data.length, true);
      expect(hostFile(0x3000, data.length)).toEqual(data);
    });
  });
});

describeBackends('rtl8139', 'a sub-page RAM-device section', (bdf, backend) => {
  it('is skipped, reported once on the machine sink naming the absolute range and region, and mapped once page-aligned', () => {
    using m = machine();
    const reports: GuestError[] = [];
    m.addDevice(bdf(), { log: null });
    m.on('guest-error', (e) => {
      if (e.source === 'dma') reports.push(e);
    });
    const at = 0x0900_0100;
    placeBar(m.devices[0], 1, at);
    enable(m, 0);
    // Decode off and on: the listener plans the same section again, and does not report it again.
    const cmd = m.devices[0].configRead(0x04, 2);
    m.devices[0].configWrite(0x04, 2, cmd & ~0x3);
    m.devices[0].configWrite(0x04, 2, cmd);
    const name = `${bdf()} BAR 1 mmaps[0]`;
    expect(reports).toEqual([
      expect.objectContaining({
        source: 'dma',
        kind: 'dma-skipped',
        where: name,
        address: at,
        size: 0x100,
        action: 'skipped',
        detail: expect.objectContaining({ start: at, size: 0x100, region: name, reason: 'unaligned-device' }),
      }),
    ]);
    expect(reports[0].message).toContain('[0x9000100, 0x9000200)');
    expect(reports[0].message).toContain(name);
    expect(m.guestErrors.count('dma', 'dma-skipped')).toBe(1);
    expect(m.dma!.skipped()).toEqual([reports[0].detail]);
    expect(m.dma!.mappings().map((x) => x.kind)).toEqual(['ram']);
    // Page-aligned, the sub-page BAR expands to its page, which the IOMMU can take (type1; iommufd
    // cannot pin a BAR's page, and says so).
    placeBar(m.devices[0], 1, 0x0900_0000);
    if (backend === 'iommufd') {
      expectBarRefused(m, 0x0900_0000, 0x1000);
      expect(m.dma!.mappings().map((x) => x.kind)).toEqual(['ram']);
      return;
    }
    expect(m.dma!.skipped()).toEqual([]);
    expect(m.dma!.mappings()[1]).toEqual({
      iova: 0x0900_0000,
      size: 0x1000,
      region: name,
      kind: 'ram-device',
      readonly: false,
    });
  });
});

describeBackends('e1000e', '1,000 BAR relocations', (bdf, backend) => {
  it("keeps the kernel's view equal to the record, and gives every DMA entry back", () => {
    using m = machine();
    m.addDevice(bdf(), { log: null });
    const dma = m.container!;
    const k = kernelOf(dma);
    const dev = m.devices[0];
    const avail = (): number | undefined => (dma instanceof Container ? dma.iommuInfo().dmaAvail : undefined);
    const startAvail = avail();
    // Only RAM is mapped yet.
    expect(m.dma!.stats.mappingCount).toBe(1);
    placeBar(dev, 1, 0x2000_0000);
    enable(m, 0);
    const recorded = (): { iova: number; size: number }[] =>
      m.dma!.mappings().map(({ iova, size }) => ({ iova, size }));
    // Unmap what the record says is there: the kernel must give back exactly that; then put it back.
    const probe = (iova: number, size: number): void => {
      expect(k.unmap(iova, size)).toBe(size);
      const s = m.bus.memory.flatView.lookup(iova)!;
      const memory: DmaMemory =
        s.kind === 'ram' ? (m.ram as DmaMemory) : (s.region.memory as unknown as DmaMemory);
      const offset = s.kind === 'ram' ? iova : s.offsetInRegion + (iova - s.addr);
      k.map(memory, offset, iova, size);
    };
    let prev = -1;
    for (let i = 0; i < 1000; i++) {
      const at = 0x1000_0000 + (i % 16) * 0x20000 + (i % 2) * 0x100_0000;
      placeBar(dev, 0, at);
      const rec = recorded();
      const bar0 = rec.filter((r) => r.iova >= 0x1000_0000 && r.iova < 0x2000_0000);
      // On iommufd the BAR is never in the IOMMU (no pages to pin): nor in the record, nor in the kernel.
      expect(bar0.reduce((n, r) => n + r.size, 0)).toBe(backend === 'type1' ? 0x20000 : 0);
      if (backend === 'iommufd') expect(k.unmap(at, 0x20000)).toBe(0);
      for (const r of bar0) probe(r.iova, r.size);
      // Where BAR 0 was, nothing is left (unless it is where it is now).
      if (prev >= 0 && prev !== at) expect(k.unmap(prev, 0x20000)).toBe(0);
      prev = at;
      if (i % 250 === 0) for (const r of rec) probe(r.iova, r.size);
    }
    expect(m.dma!.stats).toMatchObject({
      fatalCount: 0,
      ...(backend === 'type1' ? { dmaErrorCount: 0 } : {}),
    });
    if (backend === 'type1') expect(avail()).toBe(startAvail! - m.dma!.stats.mappingCount + 1);
    m.dma!.close();
    expect(m.dma!.stats.mappingCount).toBe(0);
    if (backend === 'type1') expect(avail()).toBe(startAvail! + 1);
    expect(dma.dmaMappings()).toEqual([]);
    // RAM was mapped ahead by the machine; nothing else is left in the kernel.
    expect(k.unmap(0x1000_0000, 0x200_0000)).toBe(0);
  });
});
