// `vfio-bridge mdev` on a fake sysfs: the listings as text and as JSON that keeps its schema, and
// the refusals as the CLI reports every failure (exit 1, the code, the hint).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { cli, validJson } from '../../support/cli-harness';
import { kernelCreate, makeMdevSysfs, makeProc } from './fake-mdev';

const A = '11111111-2222-4333-8444-555555555555';
const B = '66666666-7777-4888-9999-aaaaaaaaaaaa';

let tmp: string;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mdev-cli-'));
  env = { VFIO_BRIDGE_SYSFS_ROOT: path.join(tmp, 'sys'), VFIO_BRIDGE_PROC_ROOT: path.join(tmp, 'proc') };
  makeMdevSysfs(
    env.VFIO_BRIDGE_SYSFS_ROOT!,
    [
      { id: 'mtty-1', name: 'Single port serial', available: 0 },
      { id: 'mtty-2', name: 'Dual port serial', available: 0 },
    ],
    [{ uuid: A, type: 'mtty-1', group: 7, cdev: 'vfio0' }],
  );
  makeProc(env.VFIO_BRIDGE_PROC_ROOT!, 1, {
    1: { comm: 'self', fds: [] },
    99: { comm: 'qemu', fds: ['/dev/vfio/7'] },
  });
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('mdev list and types, as text and as JSON', async () => {
  const list = await cli(['mdev', 'list'], env);
  expect(list.code).toBe(0);
  expect(list.stdout).toBe(`${A}  mtty mtty-1  group 7  /dev/vfio/devices/vfio0  driver none\n`);
  const json = validJson('mdev-list', (await cli(['mdev', 'list', '--json'], env)).stdout);
  expect(json.devices).toEqual([
    {
      uuid: A,
      parent: 'mtty',
      type: 'mtty-1',
      iommuGroup: 7,
      cdev: '/dev/vfio/devices/vfio0',
      driver: null,
      removing: false,
    },
  ]);
  const types = await cli(['mdev', 'types'], env);
  expect(types.stdout).toContain('  mtty-1  vfio-pci  0 available  1 in use  "Single port serial"\n');
  const tj = validJson('mdev-types', (await cli(['mdev', 'types', 'mtty', '--json'], env)).stdout);
  expect((tj.parents as { types: unknown[] }[])[0]!.types).toHaveLength(2);
});

test('create refuses an exhausted type with exit 1, saying what to remove', async () => {
  const r = await cli(['mdev', 'create', 'mtty', '2'], env);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(
    'has no instance left (available_instances is 0); 1 mediated device uses mtty [ENOSPC]',
  );
  expect(r.stderr).toContain(`hint: remove one of ${A} (mtty-1) (vfio-bridge mdev remove UUID)`);
});

test('create prints the new device, in JSON too', async () => {
  const root = env.VFIO_BRIDGE_SYSFS_ROOT!;
  fs.writeFileSync(
    path.join(root, 'devices/virtual/mtty/mtty/mdev_supported_types/mtty-2/available_instances'),
    '3\n',
  );
  const written = kernelCreate(root, { uuid: B, type: 'mtty-2', group: 8 });
  const r = await cli(['mdev', 'create', 'mtty', 'mtty-2', '--uuid', B, '--json'], env);
  expect(await written).toBe(B);
  expect(r.code).toBe(0);
  expect(validJson('mdev-create', r.stdout).device).toMatchObject({ uuid: B, type: 'mtty-2', iommuGroup: 8 });
});

test('remove refuses a device another process holds, and a malformed UUID is a usage error', async () => {
  const r = await cli(['mdev', 'remove', A], env);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`mediated device ${A} may be open: pid 99 (qemu) holds /dev/vfio/7 [EBUSY]`);
  const bad = await cli(['mdev', 'remove', 'not-a-uuid'], env);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain('is not a UUID');
});
