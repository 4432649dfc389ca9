/**
 * Interrupt delivery benchmark (`npm run bench:irq`; in the lab: `npm run lab -- npm run bench:irq`).
 *
 * Latency: a worker thread plays the device. It stamps the time, writes the eventfd, and waits for
 * the main thread's callback to stamp its own time and acknowledge; then it pauses a little, so the
 * main loop is idle in epoll when the next interrupt comes, as it would be in a VMM. The same run
 * measures the baseline, the least an addon can do (one uv_poll, one read, one napi_make_callback
 * without arguments), in alternating rounds so both see the same machine. Figures are p50 and p99.
 *
 * Sustained rate: the worker writes the eventfd as fast as it can for a while; the watcher drains
 * and delivers with coalescing, and the event loop's delay is sampled meanwhile to show it stays
 * responsive.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';

import { EventFd, IrqWatcher } from '../lib';
import { native } from '../lib/native';

const ROUNDS = 6;
const PER_ROUND = 500;
const SUSTAIN_MS = 2000;

const DEVICE = `
const { workerData } = require('node:worker_threads');
require('@swc-node/register');
const { native } = require(workerData.native);
const ctl = new Int32Array(workerData.ctl);       // [0]: go (count), [1]: ack counter, [2]: stop
const stamp = new BigInt64Array(workerData.stamp);
const pause = new Int32Array(new SharedArrayBuffer(4));
for (;;) {
  Atomics.wait(ctl, 0, 0);
  const n = Atomics.exchange(ctl, 0, 0);
  if (n < 0) break;
  if (workerData.flood) {
    const end = Date.now() + n;
    let sent = 0;
    while (Date.now() < end) { native.eventfdWrite(workerData.fd, 1); sent++; }
    stamp[0] = BigInt(sent);
    Atomics.store(ctl, 1, 1);
    Atomics.notify(ctl, 1);
    continue;
  }
  for (let i = 0; i < n; i++) {
    Atomics.wait(pause, 0, 0, 0.2 + Math.random() * 0.8);
    const acked = Atomics.load(ctl, 1);
    stamp[0] = process.hrtime.bigint();
    native.eventfdWrite(workerData.fd, 1);
    while (Atomics.wait(ctl, 1, acked, 1000) === 'timed-out' && Atomics.load(ctl, 1) === acked);
  }
}
`;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function startDevice(fd: number, flood: boolean): { ctl: Int32Array; stamp: BigInt64Array; worker: Worker } {
  const ctlBuf = new SharedArrayBuffer(12);
  const stampBuf = new SharedArrayBuffer(8);
  const worker = new Worker(DEVICE, {
    eval: true,
    workerData: { fd, ctl: ctlBuf, stamp: stampBuf, flood, native: require.resolve('../lib/native') },
  });
  return { ctl: new Int32Array(ctlBuf), stamp: new BigInt64Array(stampBuf), worker };
}

async function latency(): Promise<{ watcher: number[]; baseline: number[] }> {
  const efd = EventFd.open();
  const dev = startDevice(efd.fd, false);
  const out = { watcher: [] as number[], baseline: [] as number[] };
  let sink: number[] = out.watcher;
  let done: (() => void) | null = null;
  let left = 0;
  const onIrq = (): void => {
    sink.push(Number(process.hrtime.bigint() - dev.stamp[0]));
    Atomics.add(dev.ctl, 1, 1);
    Atomics.notify(dev.ctl, 1);
    if (--left === 0) done?.();
  };
  const round = (n: number): Promise<void> =>
    new Promise((resolve) => {
      left = n;
      done = resolve;
      Atomics.store(dev.ctl, 0, n);
      Atomics.notify(dev.ctl, 0);
    });
  for (let r = 0; r < ROUNDS; r++) {
    sink = r % 2 === 0 ? out.baseline : out.watcher;
    if (r % 2 === 0) {
      const stop = native.irqBaselineOpen(efd.fd, onIrq);
      await round(PER_ROUND);
      stop();
    } else {
      const w = new IrqWatcher((_v, count) => {
        if (count !== 1) throw new Error(`latency run coalesced ${count} interrupts`);
        onIrq();
      });
      w.watch(0, efd);
      await round(PER_ROUND);
      w.close();
    }
  }
  Atomics.store(dev.ctl, 0, -1);
  Atomics.notify(dev.ctl, 0);
  await new Promise((r) => dev.worker.once('exit', r));
  efd.close();
  // The first round of each warms up the JIT and the worker.
  out.watcher.splice(0, PER_ROUND / 5);
  out.baseline.splice(0, PER_ROUND / 5);
  return out;
}

async function sustained(): Promise<{
  sent: number;
  delivered: number;
  wakeups: number;
  seconds: number;
  delay: ReturnType<typeof monitorEventLoopDelay>;
}> {
  const efd = EventFd.open();
  const dev = startDevice(efd.fd, true);
  let delivered = 0;
  let wakeups = 0;
  const w = new IrqWatcher((_v, count) => {
    delivered += count;
    wakeups++;
  });
  w.watch(0, efd);
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const t0 = process.hrtime.bigint();
  Atomics.store(dev.ctl, 0, SUSTAIN_MS);
  Atomics.notify(dev.ctl, 0);
  // Wait for the device to finish without blocking the loop, then let the last wake-up land.
  while (Atomics.load(dev.ctl, 1) === 0) await new Promise((r) => setTimeout(r, 5));
  const sent = Number(dev.stamp[0]);
  while (delivered < sent) await new Promise((r) => setTimeout(r, 1));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  delay.disable();
  w.close();
  Atomics.store(dev.ctl, 0, -1);
  Atomics.notify(dev.ctl, 0);
  await new Promise((r) => dev.worker.once('exit', r));
  efd.close();
  return { sent, delivered, wakeups, seconds, delay };
}

async function main(): Promise<void> {
  const lat = await latency();
  const rows = (['baseline', 'watcher'] as const).map((k) => {
    const s = [...lat[k]].sort((a, b) => a - b);
    return {
      path: k === 'baseline' ? 'raw uv_poll + make_callback (baseline)' : 'IrqWatcher (vector, count)',
      samples: s.length,
      'p50 µs': percentile(s, 50) / 1e3,
      'p99 µs': percentile(s, 99) / 1e3,
    };
  });
  console.table(
    rows.map((r) => ({ ...r, 'p50 µs': r['p50 µs'].toFixed(1), 'p99 µs': r['p99 µs'].toFixed(1) })),
  );
  const p50 = rows[1]['p50 µs'] / rows[0]['p50 µs'];
  const p99 = rows[1]['p99 µs'] / rows[0]['p99 µs'];
  console.log(
    `eventfd write -> JS callback, p50: ${p50.toFixed(2)}x the baseline (target <= 1.3x): ${p50 <= 1.3 ? 'met' : 'MISSED'}`,
  );
  console.log(`p99: ${p99.toFixed(2)}x the baseline (reported)`);

  const s = await sustained();
  const ms = (ns: number): string => (ns / 1e6).toFixed(2);
  console.log(
    `sustained: ${Math.round(s.delivered / s.seconds).toLocaleString('en')} interrupts/s delivered ` +
      `(${s.delivered.toLocaleString('en')} of ${s.sent.toLocaleString('en')} sent, none lost: ${s.delivered === s.sent ? 'yes' : 'NO'}) ` +
      `in ${Math.round(s.wakeups / s.seconds).toLocaleString('en')} callbacks/s, ${(s.delivered / s.wakeups).toFixed(1)} interrupts per callback`,
  );
  console.log(
    `event loop delay meanwhile: p50 ${ms(s.delay.percentile(50))} ms, p99 ${ms(s.delay.percentile(99))} ms, max ${ms(s.delay.max)} ms`,
  );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
