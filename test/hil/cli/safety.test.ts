// The CLI's safety on real sysfs: refusing a NIC the host has addressed, concurrent binds and
// unbinds of real devices that restore puts back, and a group handed to a user who then runs edu
// DMA without root.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';

import { Group } from '../../../lib';
import { cli } from '../../support/cli-harness';
import { bdfOf, describeDevice } from '../hil';
import { describeKernelDevice, driverNow } from './kernel-devices';

jest.setTimeout(120_000);

const ROOT = path.join(__dirname, '..', '..', '..');
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-safety-'));
const env = { ...process.env, VFIO_BRIDGE_STATE: path.join(stateDir, 'drivers.json') };
afterAll(() => fs.rmSync(stateDir, { recursive: true, force: true }));

function ifaceOf(bdf: string): string {
  return fs.readdirSync(`/sys/bus/pci/devices/${bdf}/net`)[0];
}

/**
 * The built CLI as its own process (several at once race for real). The built one, not the sources
 * through swc: on the lab's one emulated CPU, compiling in six processes at once takes minutes.
 */
function runBin(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(ROOT, 'dist/cli/main.js'), ...args], { env, cwd: ROOT });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describeKernelDevice('e1000', 'bind refuses a NIC whose interface has an address', (bdf) => {
  afterAll(async () => {
    if (driverNow(bdf) !== 'e1000') await cli(['restore', bdf], env);
  });

  test('an address on a down interface is enough; --force takes it anyway; restore brings it back', async () => {
    const iface = ifaceOf(bdf);
    execFileSync('ip', ['addr', 'add', '192.0.2.1/24', 'dev', iface]);
    try {
      const r = await cli(['bind', bdf], env);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        `${bdf} is in use by the host: network interface ${iface} has address 192.0.2.1/24`,
      );
      expect(r.stderr).toMatch(
        /\[EBUSY\]\n {2}hint: release it first \(ip addr flush dev .*\), or pass --force to bind it anyway/,
      );
      expect(driverNow(bdf)).toBe('e1000');
      expect(fs.existsSync(env.VFIO_BRIDGE_STATE)).toBe(false);
      const forced = await cli(['bind', '--force', bdf], env);
      expect(forced.stderr).toBe('');
      expect(forced.code).toBe(0);
      expect(driverNow(bdf)).toBe('vfio-pci');
    } finally {
      if (driverNow(bdf) === 'e1000') execFileSync('ip', ['addr', 'flush', 'dev', iface]);
    }
    expect((await cli(['restore', bdf], env)).code).toBe(0);
    expect(driverNow(bdf)).toBe('e1000');
    expect(execFileSync('ip', ['-4', '-o', 'addr', 'show', 'dev', ifaceOf(bdf)], { encoding: 'utf8' })).toBe(
      '',
    );
  });
});

describeKernelDevice('e1000', 'concurrent binds and unbinds of real devices', (e1000) => {
  const rtl = bdfOf('rtl8139');
  afterAll(async () => {
    for (const [bdf, drv] of [
      [e1000, 'e1000'],
      [rtl, 'vfio-pci'],
    ])
      if (driverNow(bdf) !== drv) await cli(['restore', bdf], env);
  });

  test('three binds of the NIC race three unbinds of rtl8139; restore brings each back', async () => {
    const runs = await Promise.all([
      runBin(['bind', e1000]),
      runBin(['unbind', rtl]),
      runBin(['bind', e1000]),
      runBin(['unbind', rtl]),
      runBin(['bind', e1000]),
      runBin(['unbind', rtl]),
    ]);
    for (const r of runs) expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(driverNow(e1000)).toBe('vfio-pci');
    expect(driverNow(rtl)).toBeNull();
    const saved = JSON.parse(fs.readFileSync(env.VFIO_BRIDGE_STATE, 'utf8'));
    expect(saved.devices[e1000]).toMatchObject({ driver: 'e1000', driverOverride: null });
    expect(saved.devices[rtl]).toMatchObject({ driver: 'vfio-pci', driverOverride: 'vfio-pci' });
    expect(fs.existsSync(`${env.VFIO_BRIDGE_STATE}.lock`)).toBe(false);
    const back = await Promise.all([runBin(['restore', e1000]), runBin(['restore', rtl])]);
    for (const r of back) expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(driverNow(e1000)).toBe('e1000');
    expect(driverNow(rtl)).toBe('vfio-pci');
    expect(JSON.parse(fs.readFileSync(env.VFIO_BRIDGE_STATE, 'utf8')).devices).toEqual({});
  }, 300_000);
});

describeDevice('edu', 'a group handed to a user', (bdf) => {
  const USER = 'vfiouser';
  const etc = path.join(stateDir, 'etc');
  let uid = 0;
  let gid = 0;
  let node = '';

  beforeAll(() => {
    // The guest's /etc is the host's, read-only: add the user to copies mounted over it.
    fs.mkdirSync(etc, { recursive: true });
    for (const f of ['passwd', 'group', 'shadow', 'gshadow']) {
      if (fs.existsSync(`/etc/${f}`)) fs.copyFileSync(`/etc/${f}`, path.join(etc, f));
    }
    execFileSync('useradd', ['--prefix', stateDir, '-M', '-U', '-s', '/bin/sh', USER]);
    for (const f of ['passwd', 'group']) execFileSync('mount', ['--bind', path.join(etc, f), `/etc/${f}`]);
    [uid, gid] = execFileSync('id', ['-u', USER], { encoding: 'utf8' })
      .trim()
      .split(' ')
      .concat(execFileSync('id', ['-g', USER], { encoding: 'utf8' }).trim())
      .map(Number);
    node = `/dev/vfio/${Group.numberOf(bdf())}`;
  });
  afterAll(() => {
    for (const f of ['passwd', 'group']) execFileSync('umount', [`/etc/${f}`]);
    if (node && fs.existsSync(node)) fs.chownSync(node, 0, 0);
  });

  const asUser = (memlock: string) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const p = spawn(
        'prlimit',
        [`--memlock=${memlock}`, process.execPath, path.join(__dirname, 'user-dma-child.js'), bdf()],
        {
          uid,
          gid,
          cwd: '/',
        },
      );
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (out += d.toString()));
      p.on('close', () => {
        try {
          resolve(JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>);
        } catch {
          resolve({ unparsed: out });
        }
      });
    });

  test('bind --user hands /dev/vfio/N over; the user runs edu DMA and takes its MSI without root', async () => {
    const r = await cli(['bind', '--user', USER, bdf()], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(fs.statSync(node)).toMatchObject({ uid, gid });
    expect(JSON.parse(fs.readFileSync(env.VFIO_BRIDGE_STATE, 'utf8')).groups).toMatchObject({
      [String(Group.numberOf(bdf()))]: { user: USER, uid, gid },
    });
    const ok = await asUser('1048576:1048576');
    expect(ok).toEqual({ uid, copied: true, interrupts: 2 });
  });

  test('a memlock limit too small for the buffer is named with ulimit -l in the hint', async () => {
    const small = await asUser('0:0');
    expect(small).toMatchObject({ uid, code: 'ENOMEM' });
    expect(small.hint).toContain('RLIMIT_MEMLOCK');
    expect(small.hint).toContain('ulimit -l');
  });

  test('restore gives the node back to root', async () => {
    const r = await cli(['restore', bdf()], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(fs.statSync(node)).toMatchObject({ uid: 0, gid: 0 });
    expect(driverNow(bdf())).toBe('vfio-pci');
  });
});
