// Roles resolved on the CLI's fake sysfs tree: by address, by vendor:device, by class, with several
// matches and an index, and every way a config can be wrong.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { VfioBridgeError } from '../../../lib/base/error';
import { deviceConfig, parseSelector, resolveRole } from '../../../lib/testing';
import { makeSysfs } from '../../support/fake-sysfs';

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'vb-roles-'));
  makeSysfs(root);
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const resolve = (role: string, devices: Record<string, string>, env: NodeJS.ProcessEnv = {}) =>
  resolveRole(role, { sysfsRoot: root, devices, env });

function thrown(fn: () => unknown): VfioBridgeError {
  try {
    fn();
  } catch (e) {
    return e as VfioBridgeError;
  }
  throw new Error('expected a throw');
}

describe('selectors', () => {
  test('parse addresses, pairs, classes and indexes', () => {
    expect(parseSelector('00:03.0')).toEqual({ kind: 'bdf', text: '00:03.0', bdf: '0000:00:03.0' });
    expect(parseSelector('8086:10D3#1')).toMatchObject({
      kind: 'id',
      vendor: 0x8086,
      device: 0x10d3,
      index: 1,
    });
    expect(parseSelector('0x020000')).toMatchObject({ kind: 'class', classCode: 0x020000, bytes: 3 });
    expect(parseSelector('class:0200')).toMatchObject({ kind: 'class', classCode: 0x020000, bytes: 2 });
    expect(parseSelector('class:02#2')).toMatchObject({
      kind: 'class',
      classCode: 0x020000,
      bytes: 1,
      index: 2,
    });
  });

  test.each([
    ['nic', /"nic" is not a device selector/],
    ['8086:10d3#x', /#x is not an index/],
    ['0000:00:03.0#1', /a PCI address names one device/],
    ['class:020', /not a device selector/],
    ['0x0200', /not a device selector/],
  ])('refuse %s with EDEVCONFIG and the accepted forms as hint', (text, message) => {
    const e = thrown(() => parseSelector(text));
    expect(e).toBeInstanceOf(VfioBridgeError);
    expect(e.code).toBe('EDEVCONFIG');
    expect(e.message).toMatch(message);
    expect(e.hint).toMatch(/vendor:device \(8086:10d3\)/);
  });
});

describe('resolveRole', () => {
  test('by address, short or full', () => {
    expect(resolve('snd', { snd: '00:03.1' }).bdf).toBe('0000:00:03.1');
    expect(resolve('nic', { nic: '0000:00:04.0' })).toMatchObject({
      bdf: '0000:00:04.0',
      entry: { driver: 'vfio-pci' },
    });
  });

  test('by vendor:device', () => {
    expect(resolve('nic', { nic: '8086:10d3' }).bdf).toBe('0000:00:03.0');
    expect(resolve('nic', { nic: '10ec:8139' }).bdf).toBe('0000:00:04.0');
  });

  test('by class: several matches give the first by address, #N the Nth', () => {
    expect(resolve('nic', { nic: '0x020000' }).bdf).toBe('0000:00:02.0');
    expect(resolve('nic', { nic: 'class:0200#1' }).bdf).toBe('0000:00:03.0');
    expect(resolve('nic', { nic: 'class:02#2' }).bdf).toBe('0000:00:04.0');
    expect(resolve('bridge', { bridge: 'class:06' }).bdf).toBe('0000:00:05.0');
    expect(resolve('audio', { audio: '0x040300' }).bdf).toBe('0000:00:03.1');
  });

  test('an index past the matches skips, listing them', () => {
    expect(resolve('nic', { nic: 'class:0200#3' }).skip).toBe(
      'role nic: class:0200#3 asks for match #3, but only 3 device(s) are class 0200 (0000:00:02.0, 0000:00:03.0, 0000:00:04.0)',
    );
  });

  test('no match, no device, no role: a skip that says why', () => {
    expect(resolve('nic', { nic: '8086:1533' }).skip).toBe(`role nic: no PCI device is 8086:1533 in ${root}`);
    expect(resolve('nic', { nic: 'class:0c03' }).skip).toBe(
      `role nic: no PCI device is class 0c03 in ${root}`,
    );
    expect(resolve('nic', { nic: '00:1f.0' }).skip).toBe(`role nic: no PCI device 0000:00:1f.0 in ${root}`);
    expect(resolve('gpu', { nic: '8086:10d3' }).skip).toMatch(
      /^no device plays role gpu: set VFIO_BRIDGE_DEVICES/,
    );
    expect(
      resolveRole('nic', { sysfsRoot: path.join(root, 'nowhere'), devices: { nic: '8086:10d3' }, env: {} })
        .skip,
    ).toMatch(/cannot list PCI devices/);
  });
});

describe('deviceConfig', () => {
  test('merges the lab list, the list, the file and the test, later winning', () => {
    const file = path.join(root, 'devices.json');
    fs.writeFileSync(file, JSON.stringify({ nic: '10ec:8139', audio: 'class:0403' }));
    const env = {
      VFIO_BRIDGE_HIL_DEVICES: 'edu=0000:00:03.0,nic=0000:00:02.0',
      VFIO_BRIDGE_DEVICES: ' nic = 8086:10d3 , disk=class:01',
      VFIO_BRIDGE_DEVICES_FILE: file,
    };
    expect(deviceConfig({ env })).toEqual({
      edu: '0000:00:03.0',
      nic: '10ec:8139',
      disk: 'class:01',
      audio: 'class:0403',
    });
    expect(deviceConfig({ env, devices: { nic: '8086:100e' } }).nic).toBe('8086:100e');
    expect(resolve('nic', {}, { VFIO_BRIDGE_DEVICES: 'nic=8086:100e' }).bdf).toBe('0000:00:02.0');
  });

  test.each([
    [{ VFIO_BRIDGE_DEVICES: 'nic' }, /^VFIO_BRIDGE_DEVICES: "nic" is not role=selector/],
    [
      { VFIO_BRIDGE_DEVICES: 'nic=eth0' },
      /^VFIO_BRIDGE_DEVICES \(role nic\): "eth0" is not a device selector/,
    ],
    [{ VFIO_BRIDGE_HIL_DEVICES: 'edu=3' }, /^VFIO_BRIDGE_HIL_DEVICES \(role edu\)/],
    [{ VFIO_BRIDGE_DEVICES_FILE: '/nonexistent/devices.json' }, /devices.json: cannot read it: ENOENT/],
  ])('refuses a bad environment: %j', (env, message) => {
    const e = thrown(() => deviceConfig({ env }));
    expect(e.code).toBe('EDEVCONFIG');
    expect(e.message).toMatch(message);
  });

  test.each([
    ['{ nic: 1 }', /not JSON/],
    ['["8086:10d3"]', /must be a JSON object of role to selector/],
    ['{ "nic": 1 }', /role nic: the selector must be a string/],
    ['{ "nic": "8086" }', /\(role nic\): "8086" is not a device selector/],
  ])('refuses a bad file: %s', (text, message) => {
    const file = path.join(root, 'bad.json');
    fs.writeFileSync(file, text);
    const e = thrown(() => deviceConfig({ env: { VFIO_BRIDGE_DEVICES_FILE: file } }));
    expect(e.code).toBe('EDEVCONFIG');
    expect(e.message).toMatch(message);
  });
});
