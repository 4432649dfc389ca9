// bind and unbind refuse a device the host is using, on fake trees shaped like real hosts: the
// interface or disk sits below the PCI function (virtioN/net, nvme/nvmeN, hostN/.../block).
import * as fs from 'node:fs';
import * as path from 'node:path';

import { hostUses } from '../../../lib/cli/host-use';
import { tempDir } from '../helpers';
import { makeHost, type FakeHost } from './fake-host';
import { driverOf, FakeKernel, makeSysfs, type FakeDevice } from '../../support/fake-sysfs';
import { cli } from '../../support/cli-harness';

const dev = (bdf: string, driver: string, group: number, classCode: number): FakeDevice => ({
  bdf,
  vendor: 0x1af4,
  device: 0x1000,
  classCode,
  driver,
  group,
  native: driver,
});

const HOST_DEVICES: FakeDevice[] = [
  dev('0000:00:06.0', 'virtio-pci', 6, 0x020000), // virtio-net, virtio2/net/enp0s6
  dev('0000:01:00.0', 'nvme', 7, 0x010802), // NVMe, nvme/nvme0/nvme0n1{,p1}
  dev('0000:00:1f.2', 'ahci', 8, 0x010601), // AHCI, ata1/host0/.../block/sda{,1}, an md member
  dev('0000:00:07.0', 'virtio-pci', 9, 0x010000), // virtio-blk, virtio3/block/vda{,2}, swap
  dev('0000:00:08.0', 'e1000e', 10, 0x020000), // a NIC that is down with no address
  dev('0000:00:02.0', 'i915', 11, 0x030000), // the boot GPU with fb0
];

let tmp: ReturnType<typeof tempDir>;
let sys: string;

/** A class device below a PCI function: its directory, `subsystem` link and attribute files. */
function child(bdf: string, rel: string, subsystem: string, files: Record<string, string>): void {
  const dir = path.join(sys, 'bus/pci/devices', bdf, rel);
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(path.join(sys, 'class', subsystem), { recursive: true });
  fs.symlinkSync(path.join(sys, 'class', subsystem), path.join(dir, 'subsystem'));
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
}

const HOST: FakeHost = {
  ipv4: { enp0s6: ['192.0.2.10/24'] },
  ipv6: { enp0s6: [['fd000000000000000000000000000010', 64]] },
  routes: ['enp0s6'],
  mounts: [['259:1', '/boot']],
  swaps: ['/dev/vda2'],
};

let env: NodeJS.ProcessEnv;
let kernel: FakeKernel;

beforeEach(() => {
  tmp = tempDir('vfio-bridge-host-use-');
  sys = path.join(tmp.dir, 'sys');
  makeSysfs(sys, HOST_DEVICES);
  for (const d of ['virtio-pci', 'nvme', 'ahci', 'i915']) fs.mkdirSync(path.join(sys, 'bus/pci/drivers', d));
  child('0000:00:06.0', 'virtio2/net/enp0s6', 'net', { flags: '0x1003\n', operstate: 'up\n' });
  child('0000:01:00.0', 'nvme/nvme0/nvme0n1', 'block', { dev: '259:0\n' });
  child('0000:01:00.0', 'nvme/nvme0/nvme0n1/nvme0n1p1', 'block', { dev: '259:1\n', partition: '1\n' });
  child('0000:00:1f.2', 'ata1/host0/target0:0:0/0:0:0:0/block/sda', 'block', { dev: '8:0\n' });
  child('0000:00:1f.2', 'ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1', 'block', { dev: '8:1\n' });
  fs.mkdirSync(
    path.join(sys, 'bus/pci/devices/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1/holders/md0'),
    {
      recursive: true,
    },
  );
  child('0000:00:07.0', 'virtio3/block/vda', 'block', { dev: '252:0\n' });
  child('0000:00:07.0', 'virtio3/block/vda/vda2', 'block', { dev: '252:2\n' });
  child('0000:00:08.0', 'net/eth1', 'net', { flags: '0x1002\n', operstate: 'down\n' });
  fs.writeFileSync(path.join(sys, 'bus/pci/devices/0000:00:02.0/boot_vga'), '1\n');
  child('0000:00:02.0', 'graphics/fb0', 'graphics', { dev: '29:0\n' });
  env = {
    VFIO_BRIDGE_SYSFS_ROOT: sys,
    VFIO_BRIDGE_STATE: path.join(tmp.dir, 'state/drivers.json'),
    VFIO_BRIDGE_PCI_IDS: '',
    ...makeHost(tmp.dir, HOST),
  };
  kernel = new FakeKernel(sys, HOST_DEVICES);
});
afterEach(() => {
  kernel.stop();
  tmp.remove();
});

const hostOpts = () => ({
  sysfsRoot: sys,
  procRoot: env.VFIO_BRIDGE_PROC_ROOT!,
  ipCommand: env.VFIO_BRIDGE_IP!,
});

test('each way the host uses a device is found, however deep it sits', () => {
  const what = (bdf: string) => hostUses(bdf, hostOpts()).map((u) => u.what);
  expect(what('0000:00:06.0')).toEqual([
    'network interface enp0s6 has address 192.0.2.10/24, fd00::10/64, has routes, is up',
  ]);
  expect(what('0000:01:00.0')).toEqual(['block device nvme0n1p1 is mounted on /boot']);
  expect(what('0000:00:1f.2')).toEqual(['block device sda1 is held by md0 (md, dm or LVM)']);
  expect(what('0000:00:07.0')).toEqual(['block device vda2 is in use as swap']);
  expect(what('0000:00:08.0')).toEqual([]);
  expect(what('0000:00:02.0')).toEqual([
    'it is the boot VGA device (the firmware console)',
    'it drives framebuffer fb0 (the console, fbcon, may be on it)',
  ]);
});

test('an address alone, a route alone or a link up alone is enough', () => {
  fs.writeFileSync(path.join(sys, 'bus/pci/devices/0000:00:08.0/net/eth1/flags'), '0x1002\n');
  for (const host of [
    { ipv4: { eth1: ['10.0.0.1/8'] } },
    { routes: ['eth1'] },
    { ipv6: { eth1: [['20010db8000000000000000000000001', 64]] } },
  ] as FakeHost[]) {
    const e = makeHost(path.join(tmp.dir, 'h' + Math.random().toString(36).slice(2)), host);
    expect(
      hostUses('0000:00:08.0', {
        sysfsRoot: sys,
        procRoot: e.VFIO_BRIDGE_PROC_ROOT!,
        ipCommand: e.VFIO_BRIDGE_IP!,
      }),
    ).toHaveLength(1);
  }
});

test.each([
  ['0000:00:06.0', 'network interface enp0s6 has address 192.0.2.10/24', 'ip link set enp0s6 down'],
  ['0000:01:00.0', 'block device nvme0n1p1 is mounted on /boot', 'umount /boot'],
  ['0000:00:1f.2', 'block device sda1 is held by md0', 'mdadm --stop'],
  ['0000:00:07.0', 'block device vda2 is in use as swap', 'swapoff /dev/vda2'],
  ['0000:00:02.0', 'it is the boot VGA device', 'vtconsole'],
])('bind and unbind refuse %s, touching nothing; --force goes ahead', async (bdf, what, release) => {
  for (const verb of ['bind', 'unbind']) {
    const r = await cli([verb, bdf], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`vfio-bridge: ${bdf} is in use by the host: ${what}`);
    expect(r.stderr).toMatch(
      new RegExp(
        `\\[EBUSY\\]\\n {2}hint: release it first \\(.*${release.replace(/[/.]/g, '\\$&')}.*\\), or pass --force to ${verb} it anyway`,
      ),
    );
    expect(driverOf(sys, bdf)).not.toBeNull();
    expect(fs.existsSync(env.VFIO_BRIDGE_STATE!)).toBe(false);
  }
  const forced = await cli(['bind', '--force', bdf], env);
  expect(forced.stderr).toBe('');
  expect(forced.code).toBe(0);
  expect(driverOf(sys, bdf)).toBe('vfio-pci');
});

test('a kernel NIC that is down with no address is taken, and restored', async () => {
  const r = await cli(['bind', '0000:00:08.0'], env);
  expect(r).toMatchObject({ code: 0, stdout: '0000:00:08.0: e1000e -> vfio-pci\n' });
  expect((await cli(['restore', '0000:00:08.0'], env)).code).toBe(0);
  expect(driverOf(sys, '0000:00:08.0')).toBe('e1000e');
});

test('a device that does not exist is named as such before any driver is looked for', async () => {
  for (const argv of [
    ['bind', '--driver', 'nope', '00:1e.0'],
    ['unbind', '00:1e.0'],
    ['bind', '--user', 'root', '00:1e.0'],
  ]) {
    const r = await cli(argv, env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^vfio-bridge: no PCI device 0000:00:1e\.0 in .* \[ENOENT\]\n/);
  }
});

test('the state file is written only once the kernel took the first write', async () => {
  // driver_override refuses the write (as it does for a user without root): a file that reads
  // but does not take writes, even from root.
  const override = path.join(sys, 'bus/pci/devices/0000:00:08.0/driver_override');
  fs.rmSync(override);
  fs.symlinkSync('/proc/version', override);
  const r = await cli(['bind', '0000:00:08.0'], env);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`writing "vfio-pci" to ${override} failed: E`);
  expect(fs.existsSync(env.VFIO_BRIDGE_STATE!)).toBe(false);
});

test('--help says what persists and what does not', async () => {
  for (const verb of ['bind', 'unbind', 'restore']) {
    const r = await cli([verb, '--help'], env);
    expect(r.stdout).toContain('/run/vfio-bridge/drivers.json');
    expect(r.stdout).toMatch(
      /driver_override, the binding itself and the owner of \/dev\/vfio\/N are the kernel's and are lost on\s+reboot/,
    );
  }
});
