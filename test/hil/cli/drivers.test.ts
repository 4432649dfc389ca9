// The CLI moving a real device between its kernel driver and vfio-pci, on the lab's sysfs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Group, VfioError } from '../../../lib';
import { cli, validJson } from '../../support/cli-harness';
import { bdfOf, describeDevice, openDevice } from '../hil';
import { describeKernelDevice, driverNow } from './kernel-devices';

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-state-'));
const env = { ...process.env, VFIO_BRIDGE_STATE: path.join(stateDir, 'drivers.json') };
afterAll(() => fs.rmSync(stateDir, { recursive: true, force: true }));

interface ListDevice {
  bdf: string;
  driver: string | null;
  driverOverride: string | null;
  iommuGroup: number | null;
  viable: boolean;
  vfioReady: boolean;
  net: { name: string; up: boolean }[];
}

async function listed(bdf: string): Promise<ListDevice> {
  const r = await cli(['list', '--json', bdf], env);
  expect(r.code).toBe(0);
  const [d] = (validJson('list', r.stdout) as { devices: ListDevice[] }).devices;
  return d;
}

function setFlags(iface: string, up: boolean): void {
  const file = `/sys/class/net/${iface}/flags`;
  const flags = parseInt(fs.readFileSync(file, 'utf8'), 16);
  fs.writeFileSync(file, `0x${(up ? flags | 1 : flags & ~1).toString(16)}`);
}

describeDevice('edu', 'list on real sysfs', (bdf) => {
  test('a vfio-pci device in a viable group is ready, as the library finds it', async () => {
    const d = await listed(bdf());
    expect(d).toMatchObject({
      driver: 'vfio-pci',
      driverOverride: 'vfio-pci',
      viable: true,
      vfioReady: true,
    });
    expect(d.iommuGroup).toBe(Group.numberOf(bdf()));
    const o = openDevice(bdf());
    try {
      expect(o.group.status().viable).toBe(true);
    } finally {
      o.close();
    }
  });
});

describeDevice('nonviable', 'bind refuses a group vfio cannot use', (bdf) => {
  test('list and bind agree with the kernel that the group is not viable', async () => {
    const d = await listed(bdf());
    expect(d).toMatchObject({ driver: 'vfio-pci', viable: false, vfioReady: false });
    const g = Group.openByBdf(bdf());
    try {
      expect(g.status().viable).toBe(false);
    } finally {
      g.close();
    }
    const r = await cli(['bind', bdf()], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`would leave IOMMU group ${d.iommuGroup} not viable: .* is on virtio-pci`),
    );
    expect(r.stderr).toContain('Pass --group to bind the whole group');
    expect(r.stderr).toContain('[ENOTVIABLE]');
  });
});

describeKernelDevice('e1000', 'bind, unbind and restore move it between drivers', (bdf) => {
  afterAll(async () => {
    // Leave the lab as found even when a test failed half-way.
    if (driverNow(bdf) !== 'e1000') await cli(['restore', bdf], env);
  });

  test('starts on e1000 with its interface, in a group vfio cannot use yet', async () => {
    expect(driverNow(bdf)).toBe('e1000');
    const d = await listed(bdf);
    expect(d).toMatchObject({ driver: 'e1000', driverOverride: null, viable: false, vfioReady: false });
    expect(d.net).toHaveLength(1);
  });

  test('an interface that is up is refused unless --force', async () => {
    const iface = (await listed(bdf)).net[0].name;
    setFlags(iface, true);
    try {
      expect((await listed(bdf)).net[0].up).toBe(true);
      const r = await cli(['bind', bdf], env);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`${bdf} is in use by the host: network interface ${iface} is up`);
      expect(r.stderr).toContain('--force');
      expect(driverNow(bdf)).toBe('e1000');
    } finally {
      setFlags(iface, false);
    }
  });

  test('bind moves it to vfio-pci, where VFIO opens it', async () => {
    const r = await cli(['bind', '--json', bdf], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(validJson('bind', r.stdout).devices).toEqual([
      { bdf, from: 'e1000', to: 'vfio-pci', changed: true },
    ]);
    expect(driverNow(bdf)).toBe('vfio-pci');
    const d = await listed(bdf);
    expect(d).toMatchObject({
      driver: 'vfio-pci',
      driverOverride: 'vfio-pci',
      viable: true,
      vfioReady: true,
      net: [],
    });
    const o = openDevice(bdf);
    try {
      expect(o.device.read(7, 0, 4)).toBe(0x100e8086);
    } finally {
      o.close();
    }
    const saved = JSON.parse(fs.readFileSync(env.VFIO_BRIDGE_STATE, 'utf8'));
    expect(saved.devices[bdf]).toMatchObject({ driver: 'e1000', driverOverride: null });
    // Binding again changes nothing and keeps the first driver remembered.
    expect((await cli(['bind', bdf], env)).stdout).toBe(`${bdf}: already on vfio-pci\n`);
  });

  test('unbind refuses while a process has the device open, naming it, instead of hanging', async () => {
    const o = openDevice(bdf);
    try {
      // Without the check, the kernel's unbind would wait for this very process to let go.
      const r = await cli(['unbind', bdf], env);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`${bdf} is in use through /dev/vfio/${o.group.number} by ${process.pid} (`);
      expect(r.stderr).toContain('[EBUSY]');
      const back = await cli(['restore', bdf], env);
      expect(back.code).toBe(1);
      expect(back.stderr).toContain('[EBUSY]');
      expect(driverNow(bdf)).toBe('vfio-pci');
    } finally {
      o.close();
    }
  });

  test('unbind leaves it on no driver, where VFIO cannot open it', async () => {
    const r = await cli(['unbind', bdf], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${bdf}: vfio-pci -> no driver\n`);
    expect(driverNow(bdf)).toBeNull();
    let err: unknown;
    try {
      openDevice(bdf).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VfioError);
  });

  test('restore puts it back on e1000 with its interface and an empty driver_override', async () => {
    const r = await cli(['restore', '--json', bdf], env);
    expect(r.code).toBe(0);
    expect(validJson('restore', r.stdout).devices).toEqual([{ bdf, from: null, to: 'e1000', changed: true }]);
    expect(driverNow(bdf)).toBe('e1000');
    const d = await listed(bdf);
    expect(d).toMatchObject({ driver: 'e1000', driverOverride: null });
    expect(d.net).toHaveLength(1);
    expect(JSON.parse(fs.readFileSync(env.VFIO_BRIDGE_STATE, 'utf8')).devices).toEqual({});
  });

  test('several devices at once show progress; restore takes them all back', async () => {
    const edu = bdfOf('edu');
    const r = await cli(['bind', bdf, edu], env);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(`bind [1/2] ${bdf}\nbind [2/2] ${edu}\n`);
    expect(r.stdout).toBe(`${bdf}: e1000 -> vfio-pci\n${edu}: already on vfio-pci\n`);
    const back = await cli(['restore', bdf], env);
    expect(back.code).toBe(0);
    expect(back.stdout).toBe(`${bdf}: vfio-pci -> e1000\n`);
    expect(driverNow(bdf)).toBe('e1000');
    expect(driverNow(edu)).toBe('vfio-pci');
  });
});
