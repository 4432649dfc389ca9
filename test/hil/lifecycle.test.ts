// Lifetimes of real device objects: use after close, worker threads and garbage collection.
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { Worker } from 'node:worker_threads';
import { Container, Group, VfioError } from '../../lib';
import { CONFIG, describeDevice, openDevice, testNeeding } from './hil';

const dist = path.resolve(__dirname, '../../dist/index.js');

/** Use after close must be a typed error naming the operation, never a crash or a stale fd. */
function expectClosed(fn: () => unknown): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(VfioError);
  expect((err as VfioError).code).toBe('ECLOSED');
}

/** Opens the group of `bdf` and closes it again: fails with EBUSY while anyone still holds it. */
function groupIsFree(bdf: string): boolean {
  try {
    Group.openByBdf(bdf).close();
    return true;
  } catch (e) {
    if ((e as { code?: string }).code === 'EBUSY') return false;
    throw e;
  }
}

function runWorker(source: string, bdf: string): Promise<{ messages: unknown[]; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(source, { eval: true, workerData: { dist, bdf } });
    const messages: unknown[] = [];
    w.on('message', (msg) => {
      messages.push(msg);
      if (msg === 'terminate-me') void w.terminate();
    });
    w.on('error', reject);
    w.on('exit', (exitCode) => resolve({ messages, exitCode }));
  });
}

const OPEN_IN_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { Container, Group } = require(workerData.dist);
const c = Container.open();
const g = Group.openByBdf(workerData.bdf);
g.setContainer(c);
c.setIommu();
const d = g.openDevice(workerData.bdf);
const m = d.map(0, 0, 4096);
parentPort.postMessage({ mapped: m.read32(0), fd: d.read(0, 0, 4) });
`;

describeDevice('edu', 'object lifetimes', (bdf) => {
  test('every method of a closed device, mapping, group and container throws, and close is idempotent', () => {
    const o = openDevice(bdf());
    const m = o.device.map(0, 0, 4096);
    expect(m.read32(0)).toBe(0x010000ed);
    m.close();
    expect(m.closed).toBe(true);
    expectClosed(() => m.read32(0));
    expectClosed(() => m.write32(4, 0));
    expectClosed(() => m.readBlock(0, 1, 4));
    m.close();

    o.device.close();
    expectClosed(() => o.device.read(CONFIG, 0, 4));
    expectClosed(() => o.device.regionInfo(0));
    expectClosed(() => o.device.map(0, 0, 4096));
    o.device.close();

    o.group.close();
    expectClosed(() => o.group.status());
    expectClosed(() => o.group.openDevice(bdf()));
    o.group.close();

    o.container.close();
    expectClosed(() => o.container.iommuInfo());
    o.container.close();
    expect(groupIsFree(bdf())).toBe(true);
  });

  test('Symbol.dispose closes each object', () => {
    const o = openDevice(bdf());
    const m = o.device.map(0, 0, 4096);
    m[Symbol.dispose]();
    expect(m.closed).toBe(true);
    o.device[Symbol.dispose]();
    o.group[Symbol.dispose]();
    o.container[Symbol.dispose]();
    expect(groupIsFree(bdf())).toBe(true);
  });

  test('a mapping stays valid after its device, group and container are closed', () => {
    const o = openDevice(bdf());
    const m = o.device.map(0, 0, 4096);
    o.close();
    try {
      // The mapping holds its own reference to the device file, as mmap does in C.
      expect(m.read32(0)).toBe(0x010000ed);
    } finally {
      m.close();
    }
    expect(groupIsFree(bdf())).toBe(true);
  });

  const workerTest = testNeeding(fs.existsSync(dist) ? null : 'dist/ is not built (npm run build)');

  workerTest(`a worker thread opens the device, reads it and closes everything on exit`, async () => {
    const { messages, exitCode } = await runWorker(OPEN_IN_WORKER, bdf());
    expect(exitCode).toBe(0);
    expect(messages).toEqual([{ mapped: 0x010000ed, fd: 0x010000ed }]);
    // The worker never called close(): its environment's cleanup released the group.
    expect(groupIsFree(bdf())).toBe(true);
  });

  workerTest(`a worker terminated while holding the device releases it`, async () => {
    const { messages } = await runWorker(
      `${OPEN_IN_WORKER}\nparentPort.postMessage('terminate-me');\nsetInterval(() => {}, 1000);`,
      bdf(),
    );
    expect(messages[0]).toEqual({ mapped: 0x010000ed, fd: 0x010000ed });
    expect(groupIsFree(bdf())).toBe(true);
    // And the main thread can open it again afterwards.
    const o = openDevice(bdf());
    expect(o.device.read(0, 0, 4)).toBe(0x010000ed);
    o.close();
  });

  test('objects dropped without close are collected and release the group', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    (() => {
      const c = Container.open();
      const g = Group.openByBdf(bdf());
      g.setContainer(c);
      c.setIommu();
      const d = g.openDevice(bdf());
      const m = d.map(0, 0, 4096);
      expect(m.read32(0)).toBe(0x010000ed);
    })();
    let free = false;
    for (let i = 0; i < 50 && !free; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
      free = groupIsFree(bdf());
    }
    expect(free).toBe(true);
  });
});
