/**
 * Native core benchmark (`npm run bench:native`): the cost of one fixed-width access through a
 * Mapping against the cheapest N-API call, the pread path beside it, and block throughput.
 *
 * Each task runs an inner loop of OPS operations per sample, so timer overhead does not swamp
 * nanosecond-scale calls; the no-op runs the identical loop, so the ratio compares like with like.
 * Figures are medians, which shrug off the preemption spikes of a shared machine.
 */
import * as fs from 'node:fs';

import { Bench } from 'tinybench';

import { Mapping, memfd } from '../lib';
import { native } from '../lib/native';

const OPS = 1000;
const SIZE = 1 << 20;
const BLOCK_WORDS = SIZE / 4;

async function main(): Promise<void> {
  const fd = memfd('vfio-bridge-bench', SIZE);
  const mapping = Mapping.fromFd(fd, 0, SIZE);
  const handle = native.openFd(`/proc/self/fd/${fd}`);
  const pair = new Uint32Array(2);
  const block = new Uint32Array(BLOCK_WORDS);
  const noop = native.noop;
  let sink = 0;

  const bench = new Bench({ time: 1000, warmupTime: 200 } as ConstructorParameters<typeof Bench>[0]);
  bench
    .add('N-API no-op call', () => {
      for (let i = 0; i < OPS; i++) noop();
    })
    .add('Mapping.read32 (memfd)', () => {
      let acc = 0;
      for (let i = 0; i < OPS; i++) acc ^= mapping.read32((i & 1023) << 2);
      sink ^= acc;
    })
    .add('Mapping.write32 (memfd)', () => {
      for (let i = 0; i < OPS; i++) mapping.write32((i & 1023) << 2, i);
    })
    .add('Mapping.read64Pair (memfd)', () => {
      for (let i = 0; i < OPS; i++) mapping.read64Pair((i & 1023) << 3, pair);
    })
    .add('Mapping.read64 -> bigint (memfd)', () => {
      let acc = 0n;
      for (let i = 0; i < OPS; i++) acc ^= mapping.read64((i & 1023) << 3);
      sink ^= Number(acc & 1n);
    })
    .add('pread 4 bytes (fd)', () => {
      let acc = 0;
      for (let i = 0; i < OPS; i++) acc ^= native.pread(handle, (i & 1023) << 2, 4) as number;
      sink ^= acc;
    })
    .add('Mapping.readBlock 1 MiB, width 4', () => {
      mapping.readBlock(0, BLOCK_WORDS, 4, block);
    });

  await bench.run();

  const nsPerOp = new Map<string, number>();
  for (const task of bench.tasks) {
    const r = task.result;
    if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}`);
    const perCall = r.latency.p50 * 1e6; // median, ms -> ns
    nsPerOp.set(task.name, task.name.includes('1 MiB') ? perCall : perCall / OPS);
  }
  const base = nsPerOp.get('N-API no-op call')!;
  const rows = [...nsPerOp].map(([name, ns]) => ({
    task: name,
    'ns/op': ns.toFixed(ns < 100 ? 2 : 0),
    'x no-op': name.includes('1 MiB') ? '' : (ns / base).toFixed(2),
  }));
  console.table(rows);

  const load = nsPerOp.get('Mapping.read32 (memfd)')! / base;
  const gbps = SIZE / nsPerOp.get('Mapping.readBlock 1 MiB, width 4')!; // bytes per ns = GB/s
  const pread = nsPerOp.get('pread 4 bytes (fd)')! / base;
  console.log(
    `Mapping 4-byte load: ${load.toFixed(2)}x the no-op (target <= 1.6x): ${load <= 1.6 ? 'met' : 'MISSED'}`,
  );
  console.log(
    `readBlock 1 MiB @ 4 bytes: ${gbps.toFixed(2)} GB/s (target >= 1 GB/s): ${gbps >= 1 ? 'met' : 'MISSED'}`,
  );
  console.log(`pread 4 bytes: ${pread.toFixed(1)}x the no-op (reported, no target)`);

  void sink;
  native.closeFd(handle);
  mapping.close();
  fs.closeSync(fd);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
