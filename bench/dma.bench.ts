/**
 * npm run bench:dma (in the lab: npm run lab -- npm run bench:dma): what the DMA listener adds to
 * the kernel's work, on a real type1 container (the lab's edu group gives it its IOMMU).
 *
 * - 1 GiB of guest RAM mapped through the listener, next to the same mapping made by a direct
 *   Container.mapDma on the same memory in the same run (target: at most 1.1x; pinning dominates);
 * - a BAR relocation commit with the listener on, 3 devices x 6 BARs on memfd-backed BARs: the time
 *   spent outside the kernel's map/unmap calls (target: at most 1 ms).
 */
import { DmaListener, GuestRam } from '../lib/dma';
import { AddressSpace, MemoryRegion } from '../lib/memory';
import { PciBus, VfioPciDevice } from '../lib/pci';
import { Container, Group, type DmaMapRequest } from '../lib/vfio';
import type { FakeDeviceSpec } from '../test/unit/pci/fake-device';
import { MemfdVfioDevice } from '../test/native/pci/memfd-device';

const GiB = 2 ** 30;

function ms(from: bigint): number {
  return Number(process.hrtime.bigint() - from) / 1e6;
}

function eduBdf(): string {
  const m = /(?:^|,)edu=([0-9a-f:.]+)/i.exec(process.env.VFIO_BRIDGE_HIL_DEVICES ?? '');
  if (!m) {
    throw new Error(
      'bench:dma needs a vfio-pci device for its IOMMU: run it in the lab (npm run lab -- npm run bench:dma) ' +
        'or set VFIO_BRIDGE_HIL_DEVICES=edu=<BDF>',
    );
  }
  return m[1];
}

/** A Container that counts the time spent in the kernel's map and unmap calls. */
class TimedContainer {
  kernelMs = 0;
  constructor(readonly c: Container) {}
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

function main(): void {
  const container = Container.open();
  const group = Group.openByBdf(eduBdf());
  group.setContainer(container);
  container.setIommu();
  const ram = GuestRam.create(GiB, { name: 'bench-dma' });
  try {
    // Touch every page once so both sides pin pages that exist.
    container.mapDma({ iova: 0, size: GiB, memory: ram });
    container.unmapDma(0, GiB);

    const direct: number[] = [];
    const viaListener: number[] = [];
    for (let round = 0; round < 3; round++) {
      let t = process.hrtime.bigint();
      container.mapDma({ iova: 0, size: GiB, memory: ram });
      direct.push(ms(t));
      container.unmapDma(0, GiB);

      const root = MemoryRegion.container('system', 2 ** 40);
      root.addSubregion(ram.region('pc.ram'), 0);
      const as = new AddressSpace('memory', root, { log: null });
      t = process.hrtime.bigint();
      const l = new DmaListener(container, as, { log: null });
      viaListener.push(ms(t));
      if (l.stats.mappedBytes !== GiB) throw new Error(`the listener mapped ${l.stats.mappedBytes} bytes`);
      l.close();
      as.close();
    }
    const d = median(direct);
    const v = median(viaListener);
    console.log(
      `1 GiB of guest RAM: direct mapDma ${d.toFixed(1)} ms, through the listener ${v.toFixed(1)} ms`,
    );
    console.log(`ratio ${(v / d).toFixed(3)}x (target <= 1.1x)`);

    // Three devices with six 64 KiB BARs each on memfds, all mapped for peer-to-peer DMA.
    const bus = new PciBus();
    const timed = new TimedContainer(container);
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
    const l = new DmaListener(timed, bus.memory, { log: null });
    if (l.stats.mappingCount !== 18) throw new Error(`expected 18 BAR mappings, got ${l.stats.mappingCount}`);
    const N = 500;
    let flip = false;
    timed.kernelMs = 0;
    const t = process.hrtime.bigint();
    for (let i = 0; i < N; i++) {
      flip = !flip;
      devs[1].configWrite(0x10 + 4 * 2, 4, flip ? 0xf0000000 : 0xe0000000 + 8 * 0x10000);
    }
    const total = ms(t) / N;
    const kernel = timed.kernelMs / N;
    const own = total - kernel;
    const moved = l.stats;
    console.log(
      `relocation commit, 3 devices x 6 BARs: ${(total * 1000).toFixed(1)} us in all, ` +
        `${(kernel * 1000).toFixed(1)} us in the kernel's map/unmap, ${(own * 1000).toFixed(1)} us of our own`,
    );
    console.log(
      `own time ${own.toFixed(3)} ms per commit (target <= 1 ms); ${moved.mapCalls} maps, ${moved.unmapCalls} unmaps`,
    );
    l.close();
    for (const dv of devs) dv.close();
    bus.close();
  } finally {
    ram.close();
    group.close();
    container.close();
  }
}

main();
