// Acquiring on the CLI's fake sysfs tree: why a role skips, failing instead where devices are
// required, and a device moved to vfio-pci by the CLI's bind and put back when the open fails.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { devicesRequired, probeDevice, tryAcquire, type AcquireOptions } from '../../../lib/testing';
import { DEVICES, driverOf, FakeKernel, makeSysfs, type FakeDevice } from '../../support/fake-sysfs';

/** The CLI's tree plus a second 82574L alone in its group, on e1000e with its link down. */
const TREE: FakeDevice[] = [
  ...DEVICES,
  {
    bdf: '0000:00:06.0',
    vendor: 0x8086,
    device: 0x10d3,
    classCode: 0x020000,
    driver: 'e1000e',
    group: 14,
    native: 'e1000e',
  },
];

let root: string;
let dev: string;
let opts: AcquireOptions;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'vb-acquire-'));
  makeSysfs(path.join(root, 'sys'), TREE);
  dev = path.join(root, 'dev');
  fs.mkdirSync(dev);
  fs.writeFileSync(path.join(dev, 'vfio'), '');
  fs.mkdirSync(path.join(root, 'proc'));
  opts = {
    sysfsRoot: path.join(root, 'sys'),
    vfioDevDir: dev,
    procRoot: path.join(root, 'proc'),
    ipCommand: 'false',
    stateFile: path.join(root, 'state.json'),
    env: {},
    timeoutMs: 2000,
  };
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe('probeDevice', () => {
  test('finds the device and its driver', () => {
    expect(probeDevice('nic', { ...opts, devices: { nic: '8086:10d3' } })).toMatchObject({
      role: 'nic',
      bdf: '0000:00:03.0',
      driver: 'e1000e',
    });
  });

  test('skips without /dev/vfio/vfio, without an IOMMU group, and off vfio-pci with bind off', () => {
    fs.rmSync(path.join(dev, 'vfio'));
    expect(probeDevice('nic', { ...opts, devices: { nic: '10ec:8139' } })).toEqual({
      skip: `role nic (0000:00:04.0): VFIO is not available here, ${dev}/vfio is missing (modprobe vfio-pci)`,
    });
    fs.writeFileSync(path.join(dev, 'vfio'), '');
    expect(probeDevice('bridge', { ...opts, devices: { bridge: 'class:0604' } }).skip).toMatch(
      /^role bridge \(0000:00:05.0\): the device has no IOMMU group/,
    );
    expect(probeDevice('nic', { ...opts, devices: { nic: '8086:10d3' }, bind: false }).skip).toBe(
      'role nic (0000:00:03.0) is on e1000e, not vfio-pci, and bind is off',
    );
  });
});

describe('tryAcquire', () => {
  test('skips with the reason, or fails with ENODEVICE where devices are required', async () => {
    await expect(tryAcquire('gpu', opts)).resolves.toEqual({
      skip: expect.stringMatching(/^no device plays role gpu/),
    });
    await expect(tryAcquire('gpu', { ...opts, env: { CI: 'true' } })).rejects.toMatchObject({
      code: 'ENODEVICE',
      message: expect.stringMatching(
        /role gpu.*; devices are required here \(CI=true or VFIO_BRIDGE_DEVICES_REQUIRED=1\)$/,
      ),
    });
    await expect(tryAcquire('gpu', { ...opts, required: true })).rejects.toMatchObject({ code: 'ENODEVICE' });
  });

  test('devicesRequired reads CI and VFIO_BRIDGE_DEVICES_REQUIRED', () => {
    expect(
      [{}, { CI: 'false' }, { CI: 'true' }, { CI: '1' }, { VFIO_BRIDGE_DEVICES_REQUIRED: '1' }].map((e) =>
        devicesRequired(e),
      ),
    ).toEqual([false, false, true, true, true]);
  });

  test('binds a device on another driver with the CLI, and puts it back when the open fails', async () => {
    const kernel = new FakeKernel(path.join(root, 'sys'), TREE);
    try {
      // The fake /dev/vfio/vfio is a plain file: the container's first ioctl fails.
      const e = await tryAcquire('nic', { ...opts, devices: { nic: '8086:10d3#1' } }).catch(
        (x: unknown) => x,
      );
      expect(e).toMatchObject({ code: 'ENOTTY' });
      expect(driverOf(path.join(root, 'sys'), '0000:00:06.0')).toBe('e1000e');
      expect(JSON.parse(fs.readFileSync(path.join(root, 'state.json'), 'utf8')).devices).toEqual({});
    } finally {
      kernel.stop();
    }
  });

  test('puts the device back when vfio-pci never takes it', async () => {
    const sys = path.join(root, 'sys');
    // A kernel whose vfio-pci refuses the device, as a failing probe would.
    class RefusingKernel extends FakeKernel {
      override tick(): void {
        super.tick();
        if (driverOf(sys, '0000:00:06.0') === 'vfio-pci')
          fs.rmSync(path.join(sys, 'bus/pci/devices/0000:00:06.0/driver'));
      }
    }
    const kernel = new RefusingKernel(sys, TREE);
    try {
      const e = await tryAcquire('nic', { ...opts, devices: { nic: '8086:10d3#1' }, timeoutMs: 300 }).catch(
        (x: unknown) => x,
      );
      expect(e).toMatchObject({
        code: 'ETIMEDOUT',
        message: expect.stringMatching(/did not bind to vfio-pci/),
      });
      expect(driverOf(sys, '0000:00:06.0')).toBe('e1000e');
      expect(JSON.parse(fs.readFileSync(path.join(root, 'state.json'), 'utf8')).devices).toEqual({});
    } finally {
      kernel.stop();
    }
  });

  test("refuses, with the CLI's checks, a group that would not be viable, moving nothing", async () => {
    const e = await tryAcquire('nic', { ...opts, devices: { nic: '8086:10d3' } }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'ENOTVIABLE' });
    expect(driverOf(path.join(root, 'sys'), '0000:00:03.0')).toBe('e1000e');
  });

  test("refuses, with the CLI's in-use check, a device the host uses", async () => {
    const e = await tryAcquire('nic', { ...opts, devices: { nic: '8086:100e' } }).catch((x: unknown) => x);
    expect(e).toMatchObject({
      code: 'EBUSY',
      message: expect.stringMatching(/^0000:00:02.0 is in use by the host: network interface eth0/),
    });
    expect(driverOf(path.join(root, 'sys'), '0000:00:02.0')).toBe('e1000');
  });
});

describe('the node:test adapter', () => {
  const child = path.join(__dirname, 'node-test-child.ts');
  const runChild = (env: NodeJS.ProcessEnv) =>
    spawnSync(process.execPath, ['-r', '@swc-node/register', child], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, VFIO_BRIDGE_SYSFS_ROOT: path.join(root, 'sys'), ...env },
      timeout: 60_000,
    });

  test('skips a missing role with its reason', () => {
    const r = runChild({});
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/# SKIP no device plays role gpu/);
    expect(r.stderr).toMatch(/vfio-bridge\/testing: skipping: no device plays role gpu/);
  });

  test('fails a missing role where devices are required', () => {
    const r = runChild({ VFIO_BRIDGE_DEVICES_REQUIRED: '1' });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toMatch(/gpu: has its device \(required here\)/);
    expect(r.stdout).toMatch(/devices are required here/);
  });
});
