import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { ROOT, memfdMapping, tempDir } from './helpers';

const LIB = JSON.stringify(path.join(ROOT, 'lib'));
const NATIVE = JSON.stringify(path.join(ROOT, 'lib', 'native'));

/** Lines of /proc/self/maps that belong to the memfd called `name`. */
function mappingsOf(name: string): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/memfd:${name}`)).length;
}

/** Open fds of this process that point at `file`. */
function fdsOn(file: string): number {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
    } catch {
      return false;
    }
  }).length;
}

describe('native resources are released without close()', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => tmp.remove());

  test('on garbage collection (node --expose-gc)', () => {
    const file = path.join(tmp.dir, 'gc-probe');
    fs.writeFileSync(file, '');
    const script = `
      const fs = require('node:fs');
      const { Mapping, memfd } = require(${LIB});
      const { native } = require(${NATIVE});
      const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
        .filter((l) => l.includes('/memfd:vfio-bridge-gc-probe')).length;
      const fds = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
        try { return fs.readlinkSync('/proc/self/fd/' + fd) === ${JSON.stringify(file)}; } catch { return false; }
      }).length;
      const fd = memfd('vfio-bridge-gc-probe', 4096);
      (() => {
        for (let i = 0; i < 8; i++) Mapping.fromFd(fd, 0, 4096).write32(0, i);
        for (let i = 0; i < 8; i++) native.openFd(${JSON.stringify(file)});
      })();
      const before = { maps: maps(), fds: fds() };
      (async () => {
        for (let i = 0; i < 20 && (maps() > 0 || fds() > 0); i++) {
          global.gc();
          await new Promise((r) => setImmediate(r));
        }
        // Slots freed by the collected mappings are reused by new ones, which must work normally.
        const fresh = [0, 1, 2].map(() => Mapping.fromFd(fd, 0, 4096));
        fresh.forEach((m, i) => m.write32(4 * i, 100 + i));
        const reused = fresh.map((m, i) => m.read32(4 * i));
        fresh.forEach((m) => m.close());
        fs.closeSync(fd);
        console.log(JSON.stringify({ before, after: { maps: maps(), fds: fds() }, reused }));
      })();
    `;
    const r = spawnSync(process.execPath, ['--expose-gc', '-r', '@swc-node/register', '-e', script], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      before: { maps: 8, fds: 8 },
      after: { maps: 0, fds: 0 },
      reused: [100, 101, 102],
    });
  });

  test('at environment teardown (worker exit), even while still referenced', async () => {
    const file = path.join(tmp.dir, 'teardown-probe');
    fs.writeFileSync(file, '');
    const worker = new Worker(
      `
      require('@swc-node/register');
      const fs = require('node:fs');
      const { parentPort } = require('node:worker_threads');
      const { Mapping, memfd } = require(${LIB});
      const { native } = require(${NATIVE});
      const fd = memfd('vfio-bridge-teardown-probe', 4096);
      globalThis.kept = [Mapping.fromFd(fd, 0, 4096), Mapping.fromFd(fd, 0, 4096), native.openFd(${JSON.stringify(file)})];
      setInterval(() => {}, 1000); // stay alive until terminated
      parentPort.postMessage(fd); // closed by the main thread: fs in a worker warns about foreign fds
      `,
      { eval: true },
    );
    const memfdFd = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    fs.closeSync(memfdFd);
    expect(mappingsOf('vfio-bridge-teardown-probe')).toBe(2);
    expect(fdsOn(file)).toBe(1);
    await worker.terminate();
    expect(mappingsOf('vfio-bridge-teardown-probe')).toBe(0);
    expect(fdsOn(file)).toBe(0);
  });

  test('workers have their own state: a mapping works in a worker while the main thread uses its own', async () => {
    const main = memfdMapping(4096, 'vfio-bridge-main');
    main.mapping.write32(0, 0xa5a5a5a5);
    const worker = new Worker(
      `
      require('@swc-node/register');
      const fs = require('node:fs');
      const { parentPort } = require('node:worker_threads');
      const { Mapping, VfioError, memfd } = require(${LIB});
      const fd = memfd('vfio-bridge-worker', 4096);
      const m = Mapping.fromFd(fd, 0, 4096);
      // Each direction goes through the fd on one side and the worker's mapping on the other, so
      // the values can only round-trip if that mapping really reaches the memfd.
      const viaFd = Buffer.alloc(8);
      viaFd.writeBigUInt64LE(0x0102030405060708n);
      fs.writeSync(fd, viaFd, 0, 8, 8);
      const read = String(m.read64(8));
      m.write32(16, 0xcafef00d);
      const back = Buffer.alloc(4);
      fs.readSync(fd, back, 0, 4, 16);
      let closed;
      m.close();
      try { m.read8(0); } catch (e) { closed = e instanceof VfioError && e.code; }
      parentPort.postMessage({ fd, value: m.closed, closed, read, written: back.readUInt32LE(0) });
      `,
      { eval: true },
    );
    const reply = await new Promise<{ fd: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    fs.closeSync(reply.fd);
    expect(reply).toEqual({
      fd: reply.fd,
      value: true,
      closed: 'ECLOSED',
      read: '72623859790382856',
      written: 0xcafef00d,
    });
    await worker.terminate();
    expect(main.mapping.read32(0)).toBe(0xa5a5a5a5);
    main.dispose();
  });
});
