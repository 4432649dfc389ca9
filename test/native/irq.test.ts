// Interrupt delivery without a device: eventfds into the event loop, coalescing, ref/unref,
// close, worker threads and environment teardown.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { EventFd, eventfdSignal, IrqWatcher, VfioError } from '../../lib';
import { caught, ROOT } from './helpers';

const dist = path.join(ROOT, 'dist', 'index.js');

function nextTurn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe('EventFd', () => {
  test('counts writes and drains on read', () => {
    using e = EventFd.open();
    expect(e.fd).toBeGreaterThanOrEqual(0);
    expect(e.read()).toBe(0);
    e.write();
    e.write(41);
    expect(e.read()).toBe(42);
    expect(e.read()).toBe(0);
    eventfdSignal(e.fd, 3);
    expect(e.read()).toBe(3);
  });

  test('bad values and use after close are typed errors', () => {
    const e = EventFd.open();
    expect(() => e.write(0)).toThrow(RangeError);
    expect(() => e.write(1.5)).toThrow(RangeError);
    expect(() => eventfdSignal(-1)).toThrow(RangeError);
    e.close();
    e.close();
    expect(e.fd).toBe(-1);
    expect(caught(() => e.write()).code).toBe('ECLOSED');
    expect(caught(() => e.read()).code).toBe('ECLOSED');
  });
});

describe('IrqWatcher', () => {
  test('calls once per wake-up with the coalesced count and the vector', async () => {
    using a = EventFd.open();
    using b = EventFd.open();
    const calls: [number, number][] = [];
    using w = new IrqWatcher((v, n) => calls.push([v, n]));
    w.watch(0, a);
    w.watch(5, b.fd);
    expect(w.fd(5)).toBe(b.fd);
    a.write();
    a.write();
    a.write();
    b.write(7);
    await nextTurn();
    await nextTurn();
    expect(calls.sort()).toEqual([
      [0, 3],
      [5, 7],
    ]);
    expect(a.read()).toBe(0);
  });

  test('unwatch and close stop delivery; the fds stay open', async () => {
    using a = EventFd.open();
    const calls: number[] = [];
    const w = new IrqWatcher((v) => calls.push(v));
    w.watch(1, a);
    w.unwatch(1);
    a.write();
    await nextTurn();
    expect(calls).toEqual([]);
    expect(a.read()).toBe(1);
    w.watch(1, a);
    w.close();
    w.close();
    a.write();
    await nextTurn();
    expect(calls).toEqual([]);
    expect(a.read()).toBe(1);
    expect(caught(() => w.watch(1, a)).code).toBe('ECLOSED');
    expect(caught(() => w.ref()).code).toBe('ECLOSED');
    expect(w.hasRef()).toBe(false);
  });

  test('bad arguments are typed errors', () => {
    using w = new IrqWatcher(() => undefined);
    expect(() => new IrqWatcher(1 as never)).toThrow(TypeError);
    expect(() => w.watch(2048, 0)).toThrow(RangeError);
    expect(() => w.watch(-1, 0)).toThrow(RangeError);
    expect(() => w.watch(0, -3)).toThrow(RangeError);
    using shared = EventFd.open();
    w.watch(1, shared);
    w.watch(1, shared);
    expect(() => w.watch(2, shared)).toThrow(/already watched/);
    using other = new IrqWatcher(() => undefined);
    expect(() => other.watch(0, shared)).toThrow(/another watcher/);
    w.unwatch(1);
    other.watch(0, shared);
    const e = caught(() => w.watch(0, 1_000_000));
    expect(e).toBeInstanceOf(VfioError);
    expect(e.code).toBe('EBADF');
  });

  test('an exception in the handler reaches uncaughtException and delivery continues', () => {
    const src = `
      const { EventFd, IrqWatcher } = require(${JSON.stringify(dist)});
      const e = EventFd.open();
      let n = 0;
      process.on('uncaughtException', (err) => { console.log('caught', err.message); });
      const w = new IrqWatcher((v, c) => { n++; if (n === 1) throw new Error('boom'); console.log('second', c); w.close(); e.close(); });
      w.watch(0, e);
      e.write();
      setTimeout(() => e.write(2), 20);
    `;
    const r = spawnSync(process.execPath, ['-e', src], { encoding: 'utf8', timeout: 10000 });
    expect(r.stdout).toBe('caught boom\nsecond 2\n');
    expect(r.status).toBe(0);
  });

  test('ref() keeps the process alive until close; unref() lets it exit', () => {
    const run = (body: string) =>
      spawnSync(
        process.execPath,
        ['-e', `const { EventFd, IrqWatcher } = require(${JSON.stringify(dist)});\n${body}`],
        { encoding: 'utf8', timeout: 10000 },
      );
    const unrefed = run(`
      const e = EventFd.open();
      const w = new IrqWatcher(() => {}).unref();
      w.watch(0, e);
      console.log('hasRef', w.hasRef());
    `);
    expect(unrefed.status).toBe(0);
    expect(unrefed.stdout).toBe('hasRef false\n');
    // Kept alive: exits only because an interrupt, sent 300 ms later, closes it.
    const refed = run(`
      const e = EventFd.open();
      const t0 = Date.now();
      const w = new IrqWatcher((v, n) => { console.log('irq', v, n, Date.now() - t0 >= 250); w.close(); e.close(); });
      w.watch(3, e);
      const { Worker } = require('node:worker_threads');
      new Worker('const { eventfdSignal } = require(' + JSON.stringify(${JSON.stringify(dist)}) + '); setTimeout(() => eventfdSignal(' + e.fd + '), 300);', { eval: true }).unref();
    `);
    expect(refed.stderr).toBe('');
    expect(refed.stdout).toBe('irq 3 1 true\n');
    expect(refed.status).toBe(0);
  });

  test('works on a worker loop, and a worker exiting with watchers open leaks no fd', async () => {
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { EventFd, IrqWatcher } = require(workerData.dist);
      const e = EventFd.open();
      // The two signals may arrive coalesced (n = 2) or one by one: exit once both arrived.
      let total = 0;
      const w = new IrqWatcher((v, n) => {
        total += n;
        parentPort.postMessage({ v, n });
        if (total === 2) process.exit(0); // leave the watcher and the eventfd open
      });
      w.watch(9, e);
      parentPort.postMessage({ fd: e.fd });
    `;
    const before = fdCount();
    for (let round = 0; round < 3; round++) {
      const messages: unknown[] = [];
      await new Promise<void>((resolve, reject) => {
        const worker = new Worker(src, { eval: true, workerData: { dist } });
        worker.on('message', (m: { fd?: number }) => {
          messages.push(m);
          if (m.fd !== undefined) {
            eventfdSignal(m.fd);
            eventfdSignal(m.fd);
          }
        });
        worker.on('error', reject);
        worker.on('exit', () => resolve());
      });
      const delivered = messages.slice(1) as { v: number; n: number }[];
      expect(delivered.every((m) => m.v === 9)).toBe(true);
      expect(delivered.reduce((sum, m) => sum + m.n, 0)).toBe(2);
    }
    expect(fdCount()).toBe(before);
  });
});

test('a handler may close its own watcher', async () => {
  using e = EventFd.open();
  const calls: number[] = [];
  const w = new IrqWatcher((_v, n) => {
    calls.push(n);
    w.close();
  });
  w.watch(0, e);
  e.write();
  await new Promise((r) => setTimeout(r, 20));
  e.write();
  await new Promise((r) => setTimeout(r, 20));
  expect(calls).toEqual([1]);
  expect(e.read()).toBe(1);
});
