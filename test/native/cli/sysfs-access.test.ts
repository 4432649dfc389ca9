// info, read and dump of a device on a host driver, through sysfs as lspci reads it: config space
// from `config`, a memory BAR from a mapping of `resourceN`; and what still needs vfio-pci.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { tempDir } from '../helpers';
import { DEVICES, makeSysfs, type FakeDevice } from '../../support/fake-sysfs';
import { cli, validJson } from '../../support/cli-harness';

const NIC: FakeDevice = {
  ...DEVICES[0], // 0000:00:02.0 on e1000
  resources: [[0xfeb00000, 0xfeb00fff, 0x40200]],
};

let tmp: ReturnType<typeof tempDir>;
let env: NodeJS.ProcessEnv;
const BDF = '0000:00:02.0';

beforeEach(() => {
  tmp = tempDir('vfio-bridge-sysfs-access-');
  const sys = path.join(tmp.dir, 'sys');
  makeSysfs(sys, [NIC, ...DEVICES.slice(1)]);
  const dir = path.join(sys, 'bus/pci/devices', BDF);
  const config = Buffer.alloc(256);
  config.writeUInt16LE(0x8086, 0);
  config.writeUInt16LE(0x100e, 2);
  config.writeUInt16LE(0x0010, 6); // status: capability list
  config[0x34] = 0x40;
  config[0x40] = 0x05; // MSI, the last capability
  config[0x50] = 0x01; // power management, not linked: must not show
  fs.writeFileSync(path.join(dir, 'config'), config);
  const bar = Buffer.alloc(4096);
  bar.writeUInt32LE(0xcafe0001, 0x10);
  fs.writeFileSync(path.join(dir, 'resource0'), bar);
  fs.writeFileSync(path.join(dir, 'reset_method'), 'flr bus\n');
  env = {
    VFIO_BRIDGE_SYSFS_ROOT: sys,
    VFIO_BRIDGE_PCI_IDS: '',
    VFIO_BRIDGE_STATE: path.join(tmp.dir, 's.json'),
  };
});
afterEach(() => tmp.remove());

test('info shows what sysfs tells and names what needs vfio-pci', async () => {
  const r = await cli(['info', '--json', BDF], env);
  expect(r.stderr).toBe('');
  const j = validJson('info', r.stdout);
  expect(j).toMatchObject({
    source: 'sysfs',
    driver: 'e1000',
    vendor: 0x8086,
    device: 0x100e,
    iommuGroup: 3,
    resetMethods: ['flr', 'bus'],
    irqs: [],
    capabilities: [{ offset: 0x40, id: 5, name: 'msi', extended: false }],
    regions: [{ index: 0, name: 'bar0', size: 0x1000, mappable: true }],
  });
  expect(j.needsVfioPci).toEqual(expect.arrayContaining(['IRQ indexes and counts', 'VFIO_DEVICE_RESET']));
  const text = await cli(['info', BDF], env);
  expect(text.stdout).toContain(
    'through sysfs (driver e1000): regions from resource, capabilities from config',
  );
  expect(text.stdout).toContain(
    'needs vfio-pci: VFIO region flags and sparse mmap areas, IRQ indexes and counts',
  );
});

test('read and dump go through config and resourceN at the width asked', async () => {
  const id = await cli(['read', '--json', BDF, 'config', '0', '-w', '4'], env);
  expect(validJson('read', id.stdout)).toMatchObject({ value: '0x100e8086', via: 'sysfs', width: 4 });
  expect((await cli(['read', BDF, 'config', '2', '-w', '2'], env)).stdout).toBe('0x100e\n');
  expect((await cli(['read', BDF, 'bar0', '0x10', '-w', '4'], env)).stdout).toBe('0xcafe0001\n');
  const d = await cli(['dump', BDF, 'config', '0', '16', '-w', '2'], env);
  expect(d.stdout).toMatch(/^00000000: 0x8086 0x100e 0x0000 0x0010 /);
});

test('a dump stops between two chunks on Ctrl-C, with nothing on stdout', async () => {
  // A 64 KiB BAR 0: sixteen chunks of 4 KiB.
  const dir = path.join(tmp.dir, 'sys/bus/pci/devices', BDF);
  fs.writeFileSync(path.join(dir, 'resource0'), Buffer.alloc(0x10000, 0x5a));
  const lines = fs.readFileSync(path.join(dir, 'resource'), 'utf8').split('\n');
  lines[0] = [0xfeb00000, 0xfeb0ffff, 0x40200].map((v) => `0x${v.toString(16).padStart(16, '0')}`).join(' ');
  fs.writeFileSync(path.join(dir, 'resource'), lines.join('\n'));
  const argv = ['dump', BDF, 'bar0', '0', '0x10000', '-w', '4', '--no-progress'];
  const stop = new AbortController();
  const running = cli(argv, env, null, stop.signal);
  setImmediate(() => stop.abort());
  expect(await running).toEqual({
    code: 130,
    stdout: '',
    stderr: `vfio-bridge: dump ${BDF} bar0 was aborted [ABORT_ERR]\n`,
  });
  const whole = await cli(argv, env, null, new AbortController().signal);
  expect(whole.code).toBe(0);
  expect(whole.stdout.split('\n')).toHaveLength(0x1000 + 1);
});

test('what sysfs cannot do is refused with what to do instead', async () => {
  const wide = await cli(['read', BDF, 'config', '0', '-w', '8'], env);
  expect(wide.code).toBe(1);
  expect(wide.stderr).toMatch(
    /an 8-byte read of config space of 0000:00:02\.0 through sysfs \[ENOTSUP\]\n {2}hint: .*--width 4/,
  );
  const w = await cli(['write', '--yes', BDF, 'config', '4', '0', '-w', '2'], env);
  expect(w.code).toBe(1);
  expect(w.stderr).toContain('writing to 0000:00:02.0 needs vfio-pci: it is on e1000');
  expect(w.stderr).toContain('vfio-bridge bind 0000:00:02.0');
  const via = await cli(['read', BDF, 'config', '0', '-w', '4', '--via', 'fd'], env);
  expect(via.code).toBe(2);
  expect(via.stderr).toContain('--via fd needs vfio-pci: 0000:00:02.0 is on e1000');
  const viaSysfs = await cli(['read', '0000:00:04.0', 'config', '0', '-w', '4', '--via', 'sysfs'], env);
  expect(viaSysfs.code).toBe(0); // a vfio-pci device can be read through sysfs too
});
