/**
 * npm run bench:pci: the cost of the PCI layer's hot paths, on memfd-backed BARs.
 *
 * - a 4-byte guest read dispatched to a trapped-mmap range, next to the same read made directly on
 *   the Mapping (target: at most 2x);
 * - a BAR relocation commit on a bus with 3 devices of 6 BARs each (target: at most 1 ms).
 */
import { Bench } from 'tinybench';
import { SystemAddressSpaces, VfioPciDevice } from '../lib/pci';
import type { FakeDeviceSpec } from '../test/support/fake-device';
import { MemfdVfioDevice } from '../test/native/pci/memfd-device';

const LOOP = 1000;

function place(dev: VfioPciDevice, bar: number, addr: number): void {
  dev.configWrite(0x10 + 4 * bar, 4, addr);
}

async function main(): Promise<void> {
  // An e1000e-like device: the MSI-X table at the start of BAR 3 leaves the rest of the page trapped.
  const bus = new SystemAddressSpaces();
  const e1000e = new MemfdVfioDevice({
    vendorId: 0x8086,
    deviceId: 0x10d3,
    bars: [null, null, null, { size: 0x4000, msixMappable: true }],
    msix: { entries: 5, tableBar: 3, tableOffset: 0, pbaBar: 3, pbaOffset: 0x2000 },
  });
  const dev = VfioPciDevice.open(bus, e1000e);
  place(dev, 3, 0xfebf0000);
  dev.configWrite(0x04, 2, 0x0002);
  const addr = 0xfebf0100;
  const piece = dev.mapinfo().find((r) => r.addr <= addr && addr < r.addr + r.size);
  if (piece?.mapinfo !== 'trapped-mmap')
    throw new Error(`expected a trapped-mmap range at ${addr.toString(16)}`);
  const mapping = dev.bars[3]!.mmaps[0].memory;
  mapping.write32(0x100, 0x12345678);

  // Three devices with six 64 KiB BARs each, all mapped.
  const bus3 = new SystemAddressSpaces();
  const spec: FakeDeviceSpec = {
    vendorId: 0x1234,
    deviceId: 0x5678,
    bars: Array.from({ length: 6 }, () => ({ size: 0x10000 })),
  };
  const devs = [0, 1, 2].map((d) => {
    const v = VfioPciDevice.open(bus3, new MemfdVfioDevice({ ...spec, bdf: `0000:00:0${d + 3}.0` }));
    for (let b = 0; b < 6; b++) place(v, b, 0xe0000000 + (d * 6 + b) * 0x10000);
    v.configWrite(0x04, 2, 0x0002);
    return v;
  });
  let flip = false;

  let sink = 0;
  const bench = new Bench({ time: 1000, warmupTime: 200 });
  bench
    .add(`dispatch: 4-byte read of a trapped-mmap range (x${LOOP})`, () => {
      for (let i = 0; i < LOOP; i++) sink ^= bus.mmioRead(addr, 4) as number;
    })
    .add(`direct: Mapping.read32 (x${LOOP})`, () => {
      for (let i = 0; i < LOOP; i++) sink ^= mapping.read32(0x100);
    })
    .add('relocation: move one BAR among 3 devices x 6 BARs (one commit)', () => {
      flip = !flip;
      place(devs[1], 2, flip ? 0xf0000000 : 0xe0000000 + 8 * 0x10000);
    });
  await bench.run();
  console.table(bench.table());

  const mean = (i: number): number => {
    const r = bench.tasks[i].result;
    if (r.state !== 'completed') throw new Error(`${bench.tasks[i].name}: ${r.state}`);
    return r.latency.mean;
  };
  const dispatchNs = (mean(0) / LOOP) * 1e6;
  const directNs = (mean(1) / LOOP) * 1e6;
  const relocationUs = mean(2) * 1e3;
  console.log(
    `trapped-mmap dispatch: ${dispatchNs.toFixed(1)} ns/read, direct Mapping: ${directNs.toFixed(1)} ns/read`,
  );
  console.log(`ratio ${(dispatchNs / directNs).toFixed(2)}x (target <= 2x)`);
  console.log(
    `BAR relocation commit (3 devices x 6 BARs): ${relocationUs.toFixed(1)} us (target <= 1000 us)`,
  );
  if (sink === 0x7fffffff) console.log('');
  bus.close();
  bus3.close();
  e1000e.close();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
