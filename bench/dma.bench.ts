/**
 * npm run bench:dma (in the lab: npm run lab -- npm run bench:dma): what the DMA listener adds to
 * the kernel's work, on a real type1 container (the lab's edu group gives it its IOMMU), and what
 * the two IOMMU backends cost for the same work.
 *
 * - 1 GiB of guest RAM mapped and unmapped through iommufd (an IOAS with edu attached through its
 *   cdev) next to type1 (a container with edu's group), alternating in the same run, with the
 *   ratio; on a kernel without iommufd it says so and compares nothing;
 * - 1 GiB of guest RAM mapped through the listener, next to the same mapping made by a direct
 *   Container.mapDma on the same memory in the same run (target: at most 1.1x; pinning dominates);
 * - a BAR relocation commit with the listener on, 3 devices x 6 BARs on memfd-backed BARs: the time
 *   spent outside the kernel's map/unmap calls (target: at most 1 ms), next to the same commit
 *   without a listener measured in the same run. Under the lab's TCG emulation every figure is far
 *   slower than on a host; the commit part also runs outside the lab, on a container that does
 *   nothing, which shows our own time at native speed.
 */
import { DmaListener, GuestRam, type DmaContainer } from '../lib/dma';
import { AddressSpace, MemoryRegion } from '../lib/memory';
import { SystemAddressSpaces, VfioPciDevice } from '../lib/pci';
import {
  chooseBackend,
  Container,
  Group,
  openBackend,
  type DmaMapRequest,
  type VfioBackendKind,
} from '../lib/vfio';
import type { FakeDeviceSpec } from '../test/support/fake-device';
import { MemfdVfioDevice } from '../test/native/pci/memfd-device';

const GiB = 2 ** 30;

function ms(from: bigint): number {
  return Number(process.hrtime.bigint() - from) / 1e6;
}

function eduBdf(): string | undefined {
  return /(?:^|,)edu=([0-9a-f:.]+)/i.exec(process.env.VFIO_BRIDGE_HIL_DEVICES ?? '')?.[1];
}

/** Stands in for the kernel outside the lab: every call succeeds at once. */
const nullContainer = {
  iommuInfo: () => ({ minPageSize: 4096 }),
  mapDma: (): void => undefined,
  unmapDma: (_iova: number, size: number): number => size,
};

/** A container that counts the time spent in the kernel's map and unmap calls. */
class TimedContainer {
  kernelMs = 0;
  constructor(readonly c: DmaContainer) {}
  iommuInfo(): { minPageSize: number } {
    return this.c.iommuInfo();
  }
  mapDma(req: DmaMapRequest): void {
    const t = process.hrtime.bigint();
    try {
      this.c.mapDma(req);
    } finally {
      this.kernelMs += ms(t);
    }
  }
  unmapDma(iova: number, size: number): number {
    const t = process.hrtime.bigint();
    try {
      return this.c.unmapDma(iova, size);
    } finally {
      this.kernelMs += ms(t);
    }
  }
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function mapGiB(container: Container): void {
  const ram = GuestRam.create(GiB, { name: 'bench-dma' });
  try {
    // Touch every page once so both sides pin pages that exist.
    container.mapDma({ iova: 0, size: GiB, memory: ram });
    container.unmapDma(0, GiB);

    const direct: number[] = [];
    const viaListener: number[] = [];
    const viaDirect = (): void => {
      const t = process.hrtime.bigint();
      container.mapDma({ iova: 0, size: GiB, memory: ram });
      direct.push(ms(t));
      container.unmapDma(0, GiB);
    };
    const throughListener = (): void => {
      const root = MemoryRegion.container('system', 2 ** 40);
      root.addSubregion(ram.region('pc.ram'), 0);
      const as = new AddressSpace('memory', root, { log: null });
      const t = process.hrtime.bigint();
      const l = new DmaListener(container, as, { log: null });
      viaListener.push(ms(t));
      if (l.stats.mappedBytes !== GiB) throw new Error(`the listener mapped ${l.stats.mappedBytes} bytes`);
      l.close();
      as.close();
    };
    // Alternate which goes first: pinning time varies from round to round.
    for (let round = 0; round < 6; round++) {
      if (round % 2 === 0) {
        viaDirect();
        throughListener();
      } else {
        throughListener();
        viaDirect();
      }
    }
    const d = median(direct);
    const v = median(viaListener);
    console.log(
      `1 GiB of guest RAM: direct mapDma ${d.toFixed(1)} ms, through the listener ${v.toFixed(1)} ms`,
    );
    console.log(`ratio ${(v / d).toFixed(3)}x (target <= 1.1x)`);
  } finally {
    ram.close();
  }
}

/** Relocation commits on 3 devices x 6 BARs; returns [total, kernel] ms per commit. */
function relocate(target: TimedContainer | null): [number, number] {
  const bus = new SystemAddressSpaces();
  const spec: FakeDeviceSpec = {
    vendorId: 0x1234,
    deviceId: 0x5678,
    bars: Array.from({ length: 6 }, () => ({ size: 0x10000 })),
  };
  const devs = [0, 1, 2].map((n) => {
    const v = VfioPciDevice.open(bus, new MemfdVfioDevice({ ...spec, bdf: `0000:00:0${n + 3}.0` }));
    for (let b = 0; b < 6; b++) v.configWrite(0x10 + 4 * b, 4, 0xe0000000 + (n * 6 + b) * 0x10000);
    v.configWrite(0x04, 2, 0x0002);
    return v;
  });
  const l = target && new DmaListener(target, bus.memory, { log: null });
  if (l && l.stats.mappingCount !== 18)
    throw new Error(`expected 18 BAR mappings, got ${l.stats.mappingCount}`);
  let flip = false;
  const move = (): void => {
    flip = !flip;
    devs[1].configWrite(0x10 + 4 * 2, 4, flip ? 0xf0000000 : 0xe0000000 + 8 * 0x10000);
  };
  for (let i = 0; i < 100; i++) move();
  const N = 300;
  if (target) target.kernelMs = 0;
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) move();
  const total = ms(t) / N;
  const kernel = (target?.kernelMs ?? 0) / N;
  l?.close();
  for (const dv of devs) dv.close();
  bus.close();
  return [total, kernel];
}

function reportRelocation(where: string, container: DmaContainer): void {
  relocate(null); // warms the commit path up for both
  // Alternate the two, and keep the medians: the machine is shared and noisy.
  const base: number[] = [];
  const total: number[] = [];
  const kernel: number[] = [];
  for (let round = 0; round < 5; round++) {
    base.push(relocate(null)[0]);
    const [t, k] = relocate(new TimedContainer(container));
    total.push(t);
    kernel.push(k);
  }
  const b = median(base);
  const t = median(total);
  const k = median(kernel);
  const own = t - k;
  const us = (x: number): string => `${(x * 1000).toFixed(1)} us`;
  console.log(
    `relocation commit, 3 devices x 6 BARs (${where}): without a listener ${us(b)}; with it ${us(t)} ` +
      `in all, ${us(k)} in map/unmap, ${us(own)} of our own (the listener's share ${us(own - b)})`,
  );
  console.log(`own time ${own.toFixed(3)} ms per commit (target <= 1 ms)`);
}

/** One round on `backend`: edu opened into a context of its own, 1 GiB mapped and unmapped; ms each. */
function mapUnmapOn(bdf: string, backend: VfioBackendKind, ram: GuestRam): [number, number] {
  const iommu = openBackend(bdf, { backend });
  try {
    const o = iommu.openDevice(bdf);
    try {
      let t = process.hrtime.bigint();
      iommu.dma.mapDma({ iova: 0, size: GiB, memory: ram });
      const map = ms(t);
      t = process.hrtime.bigint();
      iommu.dma.unmapDma(0, GiB);
      return [map, ms(t)];
    } finally {
      o.release();
    }
  } finally {
    iommu.close();
  }
}

/** 1 GiB of guest RAM mapped and unmapped through iommufd and through type1, alternating. */
function compareBackends(bdf: string): void {
  try {
    chooseBackend(bdf, 'iommufd');
  } catch (e) {
    console.log(`iommufd vs type1: not compared, iommufd cannot be had here: ${(e as Error).message}`);
    return;
  }
  const ram = GuestRam.create(GiB, { name: 'bench-backends' });
  try {
    // Touch every page once (a first pin also faults them in): both backends then pin pages that exist.
    mapUnmapOn(bdf, 'type1', ram);
    const times: Record<VfioBackendKind, { map: number[]; unmap: number[] }> = {
      type1: { map: [], unmap: [] },
      iommufd: { map: [], unmap: [] },
    };
    for (let round = 0; round < 6; round++) {
      const order: VfioBackendKind[] = round % 2 === 0 ? ['type1', 'iommufd'] : ['iommufd', 'type1'];
      for (const b of order) {
        const [map, unmap] = mapUnmapOn(bdf, b, ram);
        times[b].map.push(map);
        times[b].unmap.push(unmap);
      }
    }
    const f = (x: number): string => `${x.toFixed(1)} ms`;
    const [tm, tu, im, iu] = [times.type1.map, times.type1.unmap, times.iommufd.map, times.iommufd.unmap].map(
      median,
    );
    console.log(
      `1 GiB of guest RAM, map: type1 ${f(tm)}, iommufd ${f(im)}; unmap: type1 ${f(tu)}, iommufd ${f(iu)}`,
    );
    console.log(
      `iommufd/type1 ratio: map ${(im / tm).toFixed(3)}x, unmap ${(iu / tu).toFixed(3)}x, ` +
        `map+unmap ${((im + iu) / (tm + tu)).toFixed(3)}x (medians of 6 alternating rounds)`,
    );
  } finally {
    ram.close();
  }
}

function main(): void {
  reportRelocation('no-op container', nullContainer);
  const bdf = eduBdf();
  if (bdf === undefined) {
    console.log(
      'the kernel comparisons need a vfio-pci device for the IOMMU: run in the lab ' +
        '(npm run lab -- npm run bench:dma) or set VFIO_BRIDGE_HIL_DEVICES=edu=<BDF>',
    );
    return;
  }
  const container = Container.open();
  const group = Group.openByBdf(bdf);
  try {
    group.setContainer(container);
    container.setIommu();
    mapGiB(container);
    reportRelocation('real type1 container', container);
  } finally {
    group.close();
    container.close();
  }
  compareBackends(bdf);
}

main();
