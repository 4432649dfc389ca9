// The state file under CLI runs that bind and unbind at the same time: the lock, the re-read
// before each write, the first driver winning, and a racing unbind that finds the work done.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';

import { withStateLock } from '../../../lib/cli/state-lock';
import { DriverState } from '../../../lib/cli/state';
import { VfioError } from '../../../lib/vfio';
import { ROOT, tempDir } from '../helpers';
import { makeHost } from './fake-host';
import { driverOf, FakeKernel, makeSysfs } from '../../support/fake-sysfs';
import { cli } from '../../support/cli-harness';

let tmp: ReturnType<typeof tempDir>;
let state: string;
beforeEach(() => {
  tmp = tempDir('vfio-bridge-lock-');
  state = path.join(tmp.dir, 'state', 'drivers.json');
});
afterEach(() => tmp.remove());

describe('the lock', () => {
  test('is held around the change and released after it, even when the change throws', () => {
    withStateLock(state, () => expect(fs.readFileSync(`${state}.lock`, 'utf8')).toBe(`${process.pid}\n`));
    expect(fs.existsSync(`${state}.lock`)).toBe(false);
    expect(() =>
      withStateLock(state, () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(fs.existsSync(`${state}.lock`)).toBe(false);
  });

  test("a dead owner's lock is stale and broken; a live owner's is waited for, then named", () => {
    fs.mkdirSync(path.dirname(state), { recursive: true });
    fs.writeFileSync(`${state}.lock`, '2147483646\n'); // no such process
    expect(withStateLock(state, () => 'taken')).toBe('taken');
    fs.writeFileSync(`${state}.lock`, `${process.ppid}\n`);
    const t0 = Date.now();
    let err: unknown;
    try {
      withStateLock(state, () => 'never', 50);
    } catch (e) {
      err = e;
    }
    expect(Date.now() - t0).toBeGreaterThanOrEqual(50);
    expect(err).toBeInstanceOf(VfioError);
    expect(err).toMatchObject({ code: 'ETIMEDOUT', op: 'lock', path: `${state}.lock` });
    expect((err as VfioError).message).toContain(`locked by process ${process.ppid}`);
    expect((err as VfioError).hint).toContain(`remove ${state}.lock if no vfio-bridge runs`);
  });

  test('every change re-reads the file, so two holders keep both entries and the first driver', () => {
    const a = DriverState.load(state);
    const b = DriverState.load(state);
    a.remember('0000:00:02.0', 'e1000', null);
    b.remember('0000:00:04.0', 'vfio-pci', 'vfio-pci');
    b.remember('0000:00:02.0', 'vfio-pci', 'vfio-pci'); // a later driver never replaces the first
    const saved = JSON.parse(fs.readFileSync(state, 'utf8')) as {
      devices: Record<string, { driver: string }>;
    };
    expect(Object.keys(saved.devices).sort()).toEqual(['0000:00:02.0', '0000:00:04.0']);
    expect(saved.devices['0000:00:02.0'].driver).toBe('e1000');
    a.forget('0000:00:02.0');
    expect(Object.keys(JSON.parse(fs.readFileSync(state, 'utf8')).devices)).toEqual(['0000:00:04.0']);
  });

  test("a device's first change and its record are one step under the lock; a refused change records nothing", () => {
    // Held across both, no command beside this one can read the device between another's write
    // and that one's record and take the other's change for the first driver.
    const a = DriverState.load(state);
    const seen: string[] = [];
    const lock = `${state}.lock`;
    a.rememberAround(
      '0000:00:02.0',
      () => {
        seen.push(`read, locked ${fs.existsSync(lock)}`);
        return { driver: 'e1000', driverOverride: null };
      },
      () => seen.push(`write, locked ${fs.existsSync(lock)}`),
    );
    // Remembered already: the device is not read again, and the first driver stays.
    a.rememberAround(
      '0000:00:02.0',
      () => {
        seen.push('read again');
        return { driver: 'vfio-pci', driverOverride: 'vfio-pci' };
      },
      () => seen.push('write again'),
    );
    expect(seen).toEqual(['read, locked true', 'write, locked true', 'write again']);
    expect(DriverState.load(state).get('0000:00:02.0')).toMatchObject({
      driver: 'e1000',
      driverOverride: null,
    });
    expect(() =>
      a.rememberAround(
        '0000:00:04.0',
        () => ({ driver: 'e1000', driverOverride: null }),
        () => {
          throw new Error('refused');
        },
      ),
    ).toThrow('refused');
    expect(DriverState.load(state).get('0000:00:04.0')).toBeUndefined();
    expect(fs.existsSync(lock)).toBe(false);
  });
});

test('concurrent binds and unbinds in separate processes: every entry kept, restore brings all back', async () => {
  const sys = path.join(tmp.dir, 'sys');
  makeSysfs(sys);
  const env = {
    ...process.env,
    VFIO_BRIDGE_SYSFS_ROOT: sys,
    VFIO_BRIDGE_STATE: state,
    VFIO_BRIDGE_PCI_IDS: '',
    ...makeHost(tmp.dir),
  };
  const kernel = new FakeKernel(sys);
  try {
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const p = spawn(
          process.execPath,
          ['-r', '@swc-node/register', path.join(ROOT, 'lib/cli/main.ts'), ...args],
          {
            env,
            cwd: ROOT,
          },
        );
        let stderr = '';
        p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        p.on('close', (code) => resolve({ code, stderr }));
      });
    // 00:02.0 (e1000, interface up: --force) to vfio-pci three times over; 00:04.0 off vfio-pci
    // three times over, each racing the others' writes to driver/unbind.
    const results = await Promise.all([
      run(['bind', '--force', '0000:00:02.0']),
      run(['unbind', '0000:00:04.0']),
      run(['bind', '--force', '0000:00:02.0']),
      run(['unbind', '0000:00:04.0']),
      run(['bind', '--force', '0000:00:02.0']),
      run(['unbind', '0000:00:04.0']),
    ]);
    for (const r of results) expect(r).toEqual({ code: 0, stderr: '' });
    expect(driverOf(sys, '0000:00:02.0')).toBe('vfio-pci');
    expect(driverOf(sys, '0000:00:04.0')).toBeNull();
    const saved = JSON.parse(fs.readFileSync(state, 'utf8')) as {
      devices: Record<string, { driver: string; driverOverride: string | null }>;
    };
    expect(saved.devices['0000:00:02.0']).toMatchObject({ driver: 'e1000', driverOverride: null });
    expect(saved.devices['0000:00:04.0']).toMatchObject({ driver: 'vfio-pci', driverOverride: 'vfio-pci' });
    expect(fs.existsSync(`${state}.lock`)).toBe(false);
    const back = await cli(['restore', '0000:00:02.0', '0000:00:04.0'], env);
    expect(back.code).toBe(0);
    expect(driverOf(sys, '0000:00:02.0')).toBe('e1000');
    expect(driverOf(sys, '0000:00:04.0')).toBe('vfio-pci');
  } finally {
    kernel.stop();
  }
}, 60_000);
