/**
 * Memory model benchmark (`npm run bench:memory`): flat view lookup at 16, 1,000 and 100,000 ranges,
 * the commit of a 1,000-region tree after one BAR-sized move, and a 4-byte dispatch into a
 * ram-device region next to the same access made directly on its memory; and, reported with no
 * target, a 4-byte dispatch into ram, which finds its range in the flat view on every access,
 * next to the same DataView access.
 *
 * Each task runs a batch of operations per sample so that timer overhead does not dominate
 * nanosecond figures; the printed numbers are per operation.
 */
import { closeSync } from 'node:fs';
import { Bench } from 'tinybench';
import {
  AddressSpace,
  BufferMemory,
  MemoryRegion,
  transaction,
  type FixedWidthMemory,
  type MemoryListener,
} from '../lib/memory';

const TARGET_LOOKUP_NS = 100;
/** Lookup against the plain binary search over the same starts, measured in the same run. */
const TARGET_FLOOR_RATIO = 1.2;
const TARGET_COMMIT_MS = 2;
const TARGET_DISPATCH_RATIO = 1.5;

const BATCH = 1024;
let sink = 0;

/** A flat view of `n` ranges: `n` 4 KiB RAM regions 8 KiB apart, so that none merge. */
function spaceWithRanges(n: number): AddressSpace {
  const root = MemoryRegion.container(`root-${n}`, 2 ** 48);
  transaction(() => {
    for (let i = 0; i < n; i++) root.addSubregion(MemoryRegion.ram(`r${i}`, 0x1000), i * 0x2000);
  });
  const as = new AddressSpace(`lookup-${n}`, root, { log: null });
  if (as.flatView.ranges.length !== n)
    throw new Error(`expected ${n} ranges, got ${as.flatView.ranges.length}`);
  return as;
}

/** Addresses spread over every range in a scrambled order, so the last-hit cache rarely helps. */
function probeAddresses(n: number): Float64Array {
  const a = new Float64Array(BATCH);
  let x = 12345;
  for (let i = 0; i < BATCH; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    a[i] = (x % n) * 0x2000 + (x & 0xfff);
  }
  return a;
}

/**
 * A PCI-like tree of 1,000 regions: 100 devices, each a container holding BARs, MSI-X table and PBA,
 * quirk windows and mmap sections, over a background RAM region, with one listener attached.
 */
function thousandRegionTree(): { as: AddressSpace; bar: MemoryRegion; count: number } {
  const root = MemoryRegion.container('system', 2 ** 48);
  let count = 1;
  let bar: MemoryRegion | null = null;
  const io = { read: () => 0, write: () => undefined };
  transaction(() => {
    root.addSubregion(MemoryRegion.ram('ram', 0x8000_0000), 0, -1);
    count++;
    for (let d = 0; d < 100; d++) {
      const dev = MemoryRegion.container(`0000:00:${d.toString(16).padStart(2, '0')}.0`, 0x4000_0000);
      root.addSubregion(dev, 0x1_0000_0000 + d * 0x4000_0000);
      count++;
      for (let b = 0; b < 2; b++) {
        const base = MemoryRegion.io(`${dev.name} base BAR ${b}`, 0x100_0000, io);
        dev.addSubregion(base, b * 0x200_0000, 0);
        const mm = MemoryRegion.ram(`${dev.name} BAR ${b} mmaps[0]`, 0x80_0000);
        base.addSubregion(mm, 0);
        count += 2;
        if (d === 50 && b === 0) bar = base;
      }
      dev.addSubregion(MemoryRegion.io('msix-table', 0x1000, io), 0x1000, 1);
      dev.addSubregion(MemoryRegion.io('msix-pba', 0x1000, io), 0x2000, 1);
      dev.addSubregion(MemoryRegion.io(`vfio-rtl8168-window-address-quirk`, 0x8, io), 0x200_0070, 1);
      dev.addSubregion(MemoryRegion.io(`vfio-rtl8168-window-data-quirk`, 0x8, io), 0x200_0074, 2);
      count += 4;
    }
    // Pad to exactly 1,000 regions with small I/O ranges.
    for (let i = 0; count < 1000; i++, count++)
      root.addSubregion(MemoryRegion.io(`pad${i}`, 0x10, io), 0x1000 * i);
  });
  const as = new AddressSpace('memory', root, { log: null });
  const listener: MemoryListener = { regionAdd: () => void sink++, regionDel: () => void sink++ };
  as.addMemoryListener(listener);
  return { as, bar: bar!, count };
}

interface Native {
  Mapping: {
    fromFd(
      fd: number,
      offset: number,
      length: number,
      opts?: { writable?: boolean },
    ): FixedWidthMemory & { close(): void };
  };
  memfd(name: string, size: number): number;
}

/** The native Mapping over a memfd when the addon is built, else null. */
async function loadNative(): Promise<{ mem: FixedWidthMemory & { close(): void }; fd: number } | null> {
  try {
    const lib = (await import('../lib')) as unknown as Partial<Native>;
    if (typeof lib.Mapping?.fromFd !== 'function' || typeof lib.memfd !== 'function') return null;
    const fd = lib.memfd('memory-bench', 0x10000);
    return { mem: lib.Mapping.fromFd(fd, 0, 0x10000, { writable: true }), fd };
  } catch {
    return null;
  }
}

/** Index of the last start at or below `addr` (-1 if none): the cheapest lookup there is. */
function floorSearch(starts: Float64Array, addr: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (starts[mid] <= addr) lo = mid + 1;
    else hi = mid - 1;
  }
  return hi;
}

/** Median time per operation of a finished task, in nanoseconds. */
function ns(bench: Bench, name: string, perOp: number): number {
  const t = bench.tasks.find((x) => x.name === name)!;
  const r = t.result;
  if (r.state !== 'completed') {
    throw new Error(`${name}: ${r.state === 'errored' ? r.error.message : r.state}`);
  }
  return (r.latency.p50 * 1e6) / perOp;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function row(what: string, value: string, target?: string, ok?: boolean): string {
  const t = target === undefined ? '' : `   target ${target.padEnd(10)} ${ok ? 'ok' : 'MISSED'}`;
  return `${what.padEnd(42)} ${value.padStart(12)}${t}`;
}

/** Rounds of the direct/dispatch pair; alternating them keeps load drift out of the ratio. */
const ROUNDS = 5;

async function main(): Promise<void> {
  // Lookup.
  const lookups = new Bench({ time: 400, warmup: true });
  const sizes = [16, 1000, 100_000];
  const spaces: AddressSpace[] = [];
  for (const n of sizes) {
    const as = spaceWithRanges(n);
    spaces.push(as);
    const fv = as.flatView;
    const probes = probeAddresses(n);
    lookups.add(`lookup ${n}`, () => {
      for (let i = 0; i < BATCH; i++) sink += fv.lookup(probes[i])!.size;
    });
    // The floor: a plain binary search over a typed array of the same range starts, nothing else.
    const starts = Float64Array.from(fv.ranges, (r) => r.addr);
    lookups.add(`floor ${n}`, () => {
      for (let i = 0; i < BATCH; i++) sink += floorSearch(starts, probes[i]);
    });
  }

  // Commit after a BAR-sized move: every sample moves one 16 MiB BAR by 256 MiB and back.
  const tree = thousandRegionTree();
  let flip = false;
  const barHome = tree.bar.offset;
  lookups.add('commit', () => {
    flip = !flip;
    tree.bar.setOffset(flip ? barHome + 0x1000_0000 : barHome);
  });
  await lookups.run();

  // Dispatch into ram-device next to the direct access on the same memory.
  const native = await loadNative();
  const mem: FixedWidthMemory = native?.mem ?? new BufferMemory(0x10000);
  const root = MemoryRegion.container('pci', 2 ** 40);
  root.addSubregion(MemoryRegion.ram('background', 0x1000_0000), 0, -1);
  root.addSubregion(MemoryRegion.ramDevice('0000:00:03.0 BAR 0 mmaps[0]', 0x10000, mem), 0xfe00_0000);
  const ramBuf = new ArrayBuffer(0x10000);
  root.addSubregion(MemoryRegion.ram('ram', 0x10000, ramBuf), 0xfd00_0000);
  const ramView = new DataView(ramBuf);
  const das = new AddressSpace('dispatch', root, { log: null });
  const ADDR = 0xfe00_0040;
  const RAM_ADDR = 0xfd00_0040;
  const figures: Record<string, number[]> = {};
  for (let round = 0; round < ROUNDS; round++) {
    const b = new Bench({ time: 150, warmup: true });
    b.add('direct read32', () => {
      for (let i = 0; i < BATCH; i++) sink += mem.read32(0x40);
    });
    b.add('dispatch read32', () => {
      for (let i = 0; i < BATCH; i++) sink += das.read(ADDR, 4) as number;
    });
    b.add('direct write32', () => {
      for (let i = 0; i < BATCH; i++) mem.write32(0x40, i);
    });
    b.add('dispatch write32', () => {
      for (let i = 0; i < BATCH; i++) das.write(ADDR, 4, i);
    });
    await b.run();
    for (const op of ['read32', 'write32']) {
      const direct = ns(b, `direct ${op}`, BATCH);
      const via = ns(b, `dispatch ${op}`, BATCH);
      (figures[`direct ${op}`] ??= []).push(direct);
      (figures[`dispatch ${op}`] ??= []).push(via);
      (figures[`ratio ${op}`] ??= []).push(via / direct);
    }
  }

  // The same rounds into ram, after the ram-device ones: once read() has taken its full path, V8
  // optimises it with that path too, which would move the ram-device figures above.
  for (let round = 0; round < ROUNDS; round++) {
    const b = new Bench({ time: 150, warmup: true });
    b.add('direct ram read32', () => {
      for (let i = 0; i < BATCH; i++) sink += ramView.getUint32(0x40, true);
    });
    b.add('dispatch ram read32', () => {
      for (let i = 0; i < BATCH; i++) sink += das.read(RAM_ADDR, 4) as number;
    });
    await b.run();
    const direct = ns(b, 'direct ram read32', BATCH);
    const via = ns(b, 'dispatch ram read32', BATCH);
    (figures['direct ram read32'] ??= []).push(direct);
    (figures['dispatch ram read32'] ??= []).push(via);
    (figures['ratio ram read32'] ??= []).push(via / direct);
  }

  console.log(`memory model benchmark (node ${process.version}; medians, ${BATCH} operations per sample)\n`);
  for (const n of sizes) {
    const v = ns(lookups, `lookup ${n}`, BATCH);
    const floor = ns(lookups, `floor ${n}`, BATCH);
    const big = n === 100_000;
    const target = big ? `<= ${TARGET_LOOKUP_NS} ns` : undefined;
    console.log(
      row(`lookup, ${n.toLocaleString('en')} ranges`, `${v.toFixed(1)} ns`, target, v <= TARGET_LOOKUP_NS),
    );
    console.log(row(`  floor: typed-array binary search`, `${floor.toFixed(1)} ns`));
    const ratio = v / floor;
    console.log(
      row(
        `  lookup / floor`,
        `${ratio.toFixed(2)}x`,
        big ? `<= ${TARGET_FLOOR_RATIO}x` : undefined,
        ratio <= TARGET_FLOOR_RATIO,
      ),
    );
  }
  const commit = ns(lookups, 'commit', 1) / 1e6;
  console.log(
    row(
      `commit, ${tree.count.toLocaleString('en')} regions, one BAR move`,
      `${commit.toFixed(3)} ms`,
      `<= ${TARGET_COMMIT_MS} ms`,
      commit <= TARGET_COMMIT_MS,
    ),
  );
  console.log(
    `\n4-byte access into a ram-device region, ${ROUNDS} alternating rounds; memory: ${
      native ? 'native Mapping on a memfd' : 'JS BufferMemory stand-in (the native addon is not built)'
    }`,
  );
  for (const op of ['read32', 'write32']) {
    const ratio = median(figures[`ratio ${op}`]);
    console.log(row(`  direct ${op}`, `${median(figures[`direct ${op}`]).toFixed(1)} ns`));
    console.log(row(`  dispatch ${op}`, `${median(figures[`dispatch ${op}`]).toFixed(1)} ns`));
    console.log(
      row(
        `  dispatch / direct, ${op}`,
        `${ratio.toFixed(2)}x`,
        `<= ${TARGET_DISPATCH_RATIO}x`,
        ratio <= TARGET_DISPATCH_RATIO,
      ) + (native ? '' : '  (only meaningful against the native Mapping)'),
    );
  }
  const ramRatio = median(figures['ratio ram read32']);
  console.log(
    `\n4-byte read from a ram region (a flat-view lookup on every access), ${ROUNDS} rounds after those`,
  );
  console.log(row(`  DataView read32`, `${median(figures['direct ram read32']).toFixed(1)} ns`));
  console.log(row(`  dispatch read32`, `${median(figures['dispatch ram read32']).toFixed(1)} ns`));
  console.log(row(`  dispatch / DataView, read32`, `${ramRatio.toFixed(2)}x`));
  for (const as of spaces) as.close();
  tree.as.close();
  das.close();
  if (native) {
    native.mem.close();
    closeSync(native.fd);
  }
  if (sink === 0.5) console.log('');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
