// bind --user hands the group's /dev/vfio/N to a user and records it; restore and unbind give it
// back to root. The fake kernel makes no nodes, so the test makes /dev/vfio/N itself.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { tempDir } from '../helpers';
import { makeHost } from './fake-host';
import { driverOf, FakeKernel, makeSysfs } from '../../support/fake-sysfs';
import { cli } from '../../support/cli-harness';

let tmp: ReturnType<typeof tempDir>;
let env: NodeJS.ProcessEnv;
let kernel: FakeKernel;
let vfio: string;
const asRoot = process.getuid?.() === 0;

beforeEach(() => {
  tmp = tempDir('vfio-bridge-owner-');
  const sys = path.join(tmp.dir, 'sys');
  makeSysfs(sys);
  vfio = path.join(tmp.dir, 'dev-vfio');
  fs.mkdirSync(vfio);
  fs.writeFileSync(
    path.join(tmp.dir, 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\nalice:x:4242:4343::/home/alice:/bin/sh\n',
  );
  env = {
    VFIO_BRIDGE_SYSFS_ROOT: sys,
    VFIO_BRIDGE_STATE: path.join(tmp.dir, 'drivers.json'),
    VFIO_BRIDGE_PCI_IDS: '',
    VFIO_BRIDGE_VFIO_DIR: vfio,
    VFIO_BRIDGE_PASSWD: path.join(tmp.dir, 'passwd'),
    ...makeHost(tmp.dir),
  };
  kernel = new FakeKernel(sys);
});
afterEach(() => {
  kernel.stop();
  tmp.remove();
});

(asRoot ? test : test.skip)(
  'bind --user chowns the group node and records it; restore gives it back to root',
  async () => {
    const node = path.join(vfio, '3'); // 0000:00:02.0's group
    fs.writeFileSync(node, '');
    const r = await cli(['bind', '--force', '--user', 'alice', '0000:00:02.0'], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(fs.statSync(node)).toMatchObject({ uid: 4242, gid: 4343 });
    const saved = JSON.parse(fs.readFileSync(env.VFIO_BRIDGE_STATE!, 'utf8'));
    expect(saved.groups['3']).toMatchObject({ user: 'alice', uid: 4242, gid: 4343 });
    const back = await cli(['restore', '0000:00:02.0'], env);
    expect(back.code).toBe(0);
    expect(fs.statSync(node)).toMatchObject({ uid: 0, gid: 0 });
    expect(JSON.parse(fs.readFileSync(env.VFIO_BRIDGE_STATE!, 'utf8')).groups).toEqual({});
    expect(driverOf(path.join(tmp.dir, 'sys'), '0000:00:02.0')).toBe('e1000');
  },
);

(asRoot ? test : test.skip)('unbind gives a handed-over node back to root as well', async () => {
  const node = path.join(vfio, '13'); // 0000:00:04.0, already on vfio-pci
  fs.writeFileSync(node, '');
  expect((await cli(['bind', '--user', '4242', '0000:00:04.0'], env)).code).toBe(0);
  expect(fs.statSync(node).uid).toBe(4242);
  expect((await cli(['unbind', '0000:00:04.0'], env)).code).toBe(0);
  expect(fs.statSync(node).uid).toBe(0);
});

test('an unknown user, or --user with a driver that has no group node, is a usage error', async () => {
  const r = await cli(['bind', '--user', 'mallory', '0000:00:04.0'], env);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(`there is no user "mallory" in ${env.VFIO_BRIDGE_PASSWD}`);
  const d = await cli(['bind', '--user', 'alice', '--driver', '8139too', '0000:00:04.0'], env);
  expect(d.code).toBe(2);
  expect(d.stderr).toContain('--user hands over a VFIO group node, which 8139too has none of');
});
