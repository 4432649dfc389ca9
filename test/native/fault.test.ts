import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import { Mapping, VfioError, memfd } from '../../lib';
import { ROOT } from './helpers';

/** A writable mapping of a memfd that has been truncated to 0 bytes: every access raises SIGBUS. */
function zapped(size = 4096) {
  const fd = memfd('vfio-bridge-zapped', size);
  const mapping = Mapping.fromFd(fd, 0, size);
  fs.ftruncateSync(fd, 0);
  return { fd, mapping };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof VfioError) return e.code;
    throw e;
  }
  return undefined;
}

describe('SIGBUS guard', () => {
  test('every accessor reports a fault as VfioError SIGBUS and the process carries on', () => {
    const { fd, mapping: m } = zapped();
    const accesses: Array<[string, () => unknown]> = [
      ['mapping.read8', () => m.read8(1)],
      ['mapping.read16', () => m.read16(3)],
      ['mapping.read32', () => m.read32(5)],
      ['mapping.read64', () => m.read64(7)],
      ['mapping.read64', () => m.read64Pair(8, new Uint32Array(2))],
      ['mapping.write8', () => m.write8(1, 1)],
      ['mapping.write16', () => m.write16(2, 1)],
      ['mapping.write32', () => m.write32(4, 1)],
      ['mapping.write64', () => m.write64(8, 1n)],
      ['mapping.write64', () => m.write64Pair(8, 1, 2)],
      ['mapping.readBlock', () => m.readBlock(16, 4, 4)],
      ['mapping.writeBlock', () => m.writeBlock(16, new BigUint64Array(2), 8)],
    ];
    for (const [op, access] of accesses) {
      let error: unknown;
      try {
        access();
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(VfioError);
      const v = error as VfioError;
      expect(v.code).toBe('SIGBUS');
      expect(v.op).toBe(op);
      expect(v.errno).toBeUndefined();
      expect(v.hint).toMatch(/memory decode/);
      expect(v.message).toMatch(/bus error at offset 0x/);
    }
    m.close();
    fs.closeSync(fd);
  });

  test('a block fault reports the offset of the element that faulted', () => {
    // Two pages; truncating to one page leaves the first readable and the second zapped.
    const fd = memfd('vfio-bridge-half', 8192);
    const m = Mapping.fromFd(fd, 0, 8192);
    m.writeBlock(0, new Uint32Array(1024).fill(7), 4);
    fs.ftruncateSync(fd, 4096);
    expect(() => m.readBlock(4096 - 8, 4, 4)).toThrow(/bus error at offset 0x1000 /);
    expect(() => m.writeBlock(4096 - 2, new Uint8Array(4), 1)).toThrow(/bus error at offset 0x1000 /);
    expect(m.read32(4092)).toBe(7);
    m.close();
    fs.closeSync(fd);
  });

  test('the mapping works again once the backing comes back', () => {
    const { fd, mapping: m } = zapped();
    expect(codeOf(() => m.read32(0))).toBe('SIGBUS');
    fs.ftruncateSync(fd, 4096);
    m.write32(0, 0x1234);
    expect(m.read32(0)).toBe(0x1234);
    m.close();
    fs.closeSync(fd);
  });

  test('10,000 faults in a loop on the main thread', () => {
    const { fd, mapping: m } = zapped();
    let faults = 0;
    for (let i = 0; i < 10_000; i++) {
      if (
        codeOf(() => (i & 1 ? m.read32((i * 4) & 4095) : m.write64((i * 8) & 4095, BigInt(i)))) === 'SIGBUS'
      ) {
        faults++;
      }
    }
    expect(faults).toBe(10_000);
    m.close();
    fs.closeSync(fd);
  });

  test('10,000 faults in a loop in a worker thread', async () => {
    const worker = new Worker(
      `
      require('@swc-node/register');
      const fs = require('node:fs');
      const { parentPort } = require('node:worker_threads');
      const { Mapping, VfioError, memfd } = require(${JSON.stringify(path.join(ROOT, 'lib'))});
      const fd = memfd('vfio-bridge-worker-zapped', 4096);
      const m = Mapping.fromFd(fd, 0, 4096);
      fs.ftruncateSync(fd, 0);
      let faults = 0;
      for (let i = 0; i < 10000; i++) {
        try { m.read32((i * 4) & 4095); } catch (e) { if (e instanceof VfioError && e.code === 'SIGBUS') faults++; }
      }
      m.close();
      parentPort.postMessage({ fd, faults }); // the main thread closes fd: fs in a worker warns about foreign fds
      `,
      { eval: true },
    );
    const { fd, faults } = await new Promise<{ fd: number; faults: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`worker exited with ${code} before reporting`)));
    });
    fs.closeSync(fd);
    expect(faults).toBe(10_000);
  });
});

describe('SIGBUS outside the accessors keeps its normal behaviour', () => {
  const run = (script: string) =>
    spawnSync(process.execPath, ['-r', '@swc-node/register', '-e', script], { cwd: ROOT, encoding: 'utf8' });

  test('with no earlier handler, the default action terminates the process', () => {
    const r = run(`require('./lib'); process.kill(process.pid, 'SIGBUS'); setTimeout(() => {}, 2000);`);
    expect(r.signal).toBe('SIGBUS');
  });

  test('an earlier handler is chained to', () => {
    const r = run(
      `process.on('SIGBUS', () => { console.log('chained'); process.exit(0); });
       require('./lib');
       process.kill(process.pid, 'SIGBUS'); setTimeout(() => process.exit(3), 2000);`,
    );
    expect(r.stdout.trim()).toBe('chained');
    expect(r.status).toBe(0);
  });
});

describe('a SIGBUS listener added after the guard', () => {
  // The child is bounded: before the guard was re-asserted, the faulting access looped for ever.
  const run = (script: string) =>
    spawnSync(process.execPath, ['-r', '@swc-node/register', '-e', script], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 20_000,
      killSignal: 'SIGKILL',
    });
  const prelude = `
    const fs = require('node:fs');
    const { Mapping, VfioError, memfd } = require('./lib');
    const first = memfd('vfio-bridge-first', 4096);
    Mapping.fromFd(first, 0, 4096).close();
    process.on('SIGBUS', () => { console.log('listener'); process.exit(0); });
    const fd = memfd('vfio-bridge-second', 4096);
    const m = Mapping.fromFd(fd, 0, 4096); // re-asserts the guard over the listener's handler
  `;

  test('does not stop a revoked mapping from faulting into a VfioError', () => {
    const r = run(
      `${prelude}
       fs.ftruncateSync(fd, 0);
       try { m.read32(0); console.log('no fault'); } catch (e) { console.log(e instanceof VfioError ? e.code : String(e)); }
       process.exit(0);`,
    );
    expect(r.signal).toBeNull();
    expect(r.stdout.trim()).toBe('SIGBUS');
    expect(r.status).toBe(0);
  });

  test('still hears a SIGBUS sent to the process', () => {
    const r = run(
      `${prelude}
       process.kill(process.pid, 'SIGBUS'); setTimeout(() => process.exit(3), 5000);`,
    );
    expect(r.stdout.trim()).toBe('listener');
    expect(r.status).toBe(0);
  });
});

describe('SIGBUS listeners added and removed while mappings exist', () => {
  // Bounded children: without the guard a revoked access either loops for ever (libuv's handler)
  // or dies with "Bus error" (SIG_DFL put back).
  const run = (script: string) =>
    spawnSync(process.execPath, ['-r', '@swc-node/register', '-e', script], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 20_000,
      killSignal: 'SIGKILL',
    });
  const prelude = `
    const fs = require('node:fs');
    const { Mapping, VfioError, memfd } = require('./lib');
    const fd = memfd('vfio-bridge-watch', 4096);
    const m = Mapping.fromFd(fd, 0, 4096);
    const access = () => {
      try { m.read32(0); return 'no fault'; } catch (e) { return e instanceof VfioError ? e.code : String(e); }
    };
  `;

  test('adding then removing a listener leaves the guard in place', () => {
    const r = run(
      `${prelude}
       const l = () => console.log('listener');
       process.on('SIGBUS', l);
       process.off('SIGBUS', l);
       fs.ftruncateSync(fd, 0);
       console.log(access());
       process.exit(0);`,
    );
    expect(r.signal).toBeNull();
    expect(r.stdout.trim()).toBe('SIGBUS');
    expect(r.status).toBe(0);
  });

  test('only a worker maps: a main-thread listener added and removed leaves the guard in place', () => {
    const r = run(`
      const { Worker } = require('node:worker_threads');
      require('./lib');
      const worker = new Worker(\`
        require('@swc-node/register');
        const fs = require('node:fs');
        const { parentPort } = require('node:worker_threads');
        const { Mapping, VfioError, memfd } = require(\${JSON.stringify(process.cwd() + '/lib')});
        const fd = memfd('vfio-bridge-worker-watch', 4096);
        const m = Mapping.fromFd(fd, 0, 4096);
        parentPort.once('message', () => {
          fs.ftruncateSync(fd, 0);
          try { m.read32(0); parentPort.postMessage('no fault'); }
          catch (e) { parentPort.postMessage(e instanceof VfioError ? e.code : String(e)); }
        });
        parentPort.postMessage('mapped');
      \`, { eval: true });
      worker.on('message', (msg) => {
        if (msg !== 'mapped') { console.log(msg); process.exit(0); }
        const l = () => console.log('listener');
        process.on('SIGBUS', l);
        process.off('SIGBUS', l);
        worker.postMessage('go');
      });`);
    expect(r.signal).toBeNull();
    expect(r.stdout.trim()).toBe('SIGBUS');
    expect(r.status).toBe(0);
  });

  test('a listener kept after the last mapping does not take the faults', () => {
    const r = run(
      `${prelude}
       process.on('SIGBUS', () => { console.log('listener'); process.exit(0); });
       fs.ftruncateSync(fd, 0);
       console.log(access());
       process.kill(process.pid, 'SIGBUS'); setTimeout(() => process.exit(3), 5000);`,
    );
    expect(r.signal).toBeNull();
    // The fault becomes a VfioError, and the listener still hears the SIGBUS sent afterwards.
    expect(r.stdout.trim().split('\n')).toEqual(['SIGBUS', 'listener']);
    expect(r.status).toBe(0);
  });

  test('after removeAllListeners and a new listener, a sent SIGBUS still reaches it', () => {
    const r = run(
      `${prelude}
       process.on('SIGBUS', () => console.log('first'));
       process.removeAllListeners('SIGBUS');
       process.once('SIGBUS', () => { console.log('second'); process.exit(0); });
       fs.ftruncateSync(fd, 0);
       console.log(access());
       process.kill(process.pid, 'SIGBUS'); setTimeout(() => process.exit(3), 5000);`,
    );
    expect(r.stdout.trim().split('\n')).toEqual(['SIGBUS', 'second']);
    expect(r.status).toBe(0);
  });
});

describe('a SIGBUS at a guarded instruction', () => {
  // A sent signal can arrive while the instruction pointer is at a guarded access (on the return
  // from a page fault, say); only the kernel's own fault may be turned into an access error. The
  // harness calls the guard's handler with a crafted siginfo, as the kernel would deliver it.
  test('is redirected only when the kernel raised it; a sent one is chained', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-guard-'));
    try {
      const exe = path.join(dir, 'harness');
      const build = spawnSync(
        'g++',
        [
          '-std=c++20',
          '-O2',
          `-I${path.join(ROOT, 'native')}`,
          path.join(__dirname, 'fault_guard_harness.cc'),
          path.join(ROOT, 'native', 'fault_guard.cc'),
          path.join(ROOT, 'native', 'accessors_x86_64.S'),
          '-o',
          exe,
        ],
        { encoding: 'utf8' },
      );
      expect(build.stderr).toBe('');
      expect(build.status).toBe(0);
      const r = spawnSync(exe, { encoding: 'utf8', timeout: 20_000 });
      expect(r.status).toBe(0);
      const [SI_USER, SI_QUEUE, SI_TKILL, BUS_ADRERR] = [0, -1, -6, 2];
      expect(r.stdout.trim().split('\n')).toEqual([
        `${SI_USER} chained=1 redirected=0`,
        `${SI_QUEUE} chained=1 redirected=0`,
        `${SI_TKILL} chained=1 redirected=0`,
        `${BUS_ADRERR} chained=0 redirected=1`,
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
