// Mediated devices on a fake sysfs (lib/vfio/mdev): listing parents, types and instances, the
// refusals before anything is written, creation answered by a fake mdev core, and removal, which
// never blocks this process: refused while the device is held, or waited for from a helper process
// while the kernel (here a FIFO nobody reads) holds the writer.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  createMdev,
  findMdev,
  listMdevParents,
  listMdevs,
  mdevGroupNumber,
  mdevHolders,
  mdevType,
  removeMdev,
} from '../../../lib/vfio/mdev';
import type { VfioError } from '../../../lib/vfio';
import { addMdev, fifo, kernelCreate, makeMdevSysfs, makeProc, parentDir, PARENT } from './fake-mdev';

const A = '11111111-2222-4333-8444-555555555555';
const B = '66666666-7777-4888-9999-aaaaaaaaaaaa';
const C = 'cccccccc-dddd-4eee-8fff-000000000000';

let tmp: string;
let sysfsRoot: string;
let procRoot: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mdev-'));
  sysfsRoot = path.join(tmp, 'sys');
  procRoot = path.join(tmp, 'proc');
  makeProc(procRoot, 1, { 1: { comm: 'self', fds: ['/dev/null'] } });
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function caught(f: () => unknown): VfioError {
  try {
    f();
  } catch (e) {
    return e as VfioError;
  }
  throw new Error('expected an error');
}

async function rejected(p: Promise<unknown>): Promise<VfioError> {
  try {
    await p;
  } catch (e) {
    return e as VfioError;
  }
  throw new Error('expected a rejection');
}

const TYPES = [
  { id: 'mtty-1', name: 'Single port serial', available: 22 },
  { id: 'mtty-2', name: 'Dual port serial', available: 0, description: 'two 16550 ports' },
];

describe('listing', () => {
  it('lists the parent with its types and instances', () => {
    makeMdevSysfs(sysfsRoot, TYPES, [
      { uuid: B, type: 'mtty-2', group: 8, cdev: 'vfio1' },
      { uuid: A, type: 'mtty-1', group: 7 },
    ]);
    const [p] = listMdevParents({ sysfsRoot });
    expect(p!.name).toBe(PARENT);
    expect(p!.path).toBe(fs.realpathSync(parentDir(sysfsRoot)));
    expect(p!.types).toEqual([
      {
        parent: 'mtty',
        id: 'mtty-1',
        name: 'Single port serial',
        description: null,
        deviceApi: 'vfio-pci',
        availableInstances: 22,
        devices: [A],
      },
      {
        parent: 'mtty',
        id: 'mtty-2',
        name: 'Dual port serial',
        description: 'two 16550 ports',
        deviceApi: 'vfio-pci',
        availableInstances: 0,
        devices: [B],
      },
    ]);
    expect(listMdevs({ sysfsRoot }).map((m) => [m.uuid, m.parent, m.type, m.iommuGroup, m.cdev])).toEqual([
      [A, 'mtty', 'mtty-1', 7, null],
      [B, 'mtty', 'mtty-2', 8, '/dev/vfio/devices/vfio1'],
    ]);
    expect(mdevGroupNumber(B.toUpperCase(), { sysfsRoot })).toBe(8);
  });

  it('says there are no parents, and why', () => {
    fs.mkdirSync(sysfsRoot);
    expect(listMdevParents({ sysfsRoot })).toEqual([]);
    const e = caught(() => mdevType('mtty', '1', { sysfsRoot }));
    expect(e.code).toBe('ENOENT');
    expect(e.hint).toMatch(/modprobe mtty/);
  });

  it('finds a type by its suffix and names the types when it has none', () => {
    makeMdevSysfs(sysfsRoot, TYPES);
    expect(mdevType('mtty', '2', { sysfsRoot }).id).toBe('mtty-2');
    const e = caught(() => mdevType('mtty', 'mtty-3', { sysfsRoot }));
    expect(e.code).toBe('ENOENT');
    expect(e.hint).toBe(
      'its types: mtty-1 (Single port serial), mtty-2 (Dual port serial) (vfio-bridge mdev types mtty)',
    );
    const p = caught(() => mdevType('nope', '1', { sysfsRoot }));
    expect(p.hint).toBe('the parents here: mtty (vfio-bridge mdev list)');
  });

  it('refuses a malformed UUID before touching sysfs', () => {
    makeMdevSysfs(sysfsRoot, TYPES);
    expect(() => findMdev('not-a-uuid', { sysfsRoot })).toThrow(/is not a UUID/);
  });
});

describe('create', () => {
  it('writes the UUID to the type, and returns the device the kernel made', async () => {
    makeMdevSysfs(sysfsRoot, TYPES);
    const written = kernelCreate(sysfsRoot, { uuid: A, type: 'mtty-1', group: 9 });
    const d = createMdev('mtty', '1', { sysfsRoot, uuid: A.toUpperCase() });
    expect(await written).toBe(A);
    expect(d).toMatchObject({ uuid: A, parent: 'mtty', type: 'mtty-1', iommuGroup: 9, removing: false });
  });

  it('makes up a UUID when given none', () => {
    makeMdevSysfs(sysfsRoot, TYPES);
    const e = caught(() => createMdev('mtty', 'mtty-1', { sysfsRoot }));
    // No fake kernel answers: the write lands in a plain file, and no device appears.
    expect(e.code).toBe('EPROTO');
    const uuid = fs.readFileSync(
      path.join(parentDir(sysfsRoot), 'mdev_supported_types/mtty-1/create'),
      'utf8',
    );
    expect(uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('refuses a type with no instance left before writing, naming what uses the parent', () => {
    makeMdevSysfs(sysfsRoot, TYPES, [
      { uuid: A, type: 'mtty-1', group: 7 },
      { uuid: B, type: 'mtty-2', group: 8, removing: true },
    ]);
    const e = caught(() => createMdev('mtty', 'mtty-2', { sysfsRoot }));
    expect(e.code).toBe('ENOSPC');
    expect(e.message).toBe(
      'mdev type mtty-2 of mtty has no instance left (available_instances is 0); 2 mediated devices use mtty',
    );
    expect(e.hint).toBe(
      `remove one of ${A} (mtty-1), ${B} (being removed) (vfio-bridge mdev remove UUID) to make ` +
        'room; types of mtty that still have room: mtty-1 (22)',
    );
    expect(
      fs.readFileSync(path.join(parentDir(sysfsRoot), 'mdev_supported_types/mtty-2/create'), 'utf8'),
    ).toBe('');
  });

  it('refuses a UUID in use, saying which device has it', () => {
    makeMdevSysfs(sysfsRoot, TYPES, [{ uuid: A, type: 'mtty-1', group: 7 }]);
    const e = caught(() => createMdev('mtty', 'mtty-1', { sysfsRoot, uuid: A }));
    expect(e.code).toBe('EEXIST');
    expect(e.message).toBe(`UUID ${A} is in use: mediated device ${A} exists (mtty mtty-1)`);
    expect(e.hint).toMatch(/it is of the type asked for/);
  });
});

describe('remove', () => {
  it('refuses while another process holds the group, naming it, and writes nothing', async () => {
    makeMdevSysfs(sysfsRoot, TYPES, [{ uuid: A, type: 'mtty-1', group: 7, cdev: 'vfio0' }]);
    fs.rmSync(procRoot, { recursive: true });
    makeProc(procRoot, 1, {
      1: { comm: 'self', fds: [] },
      4242: { comm: 'qemu', fds: ['/dev/vfio/vfio', '/dev/vfio/7'] },
      4343: { comm: 'vmm', fds: ['/dev/vfio/devices/vfio0'] },
    });
    const held = mdevHolders(findMdev(A, { sysfsRoot })!, { procRoot });
    expect(held.holders.map((h) => [h.pid, h.command, h.nodes])).toEqual([
      [4242, 'qemu', ['/dev/vfio/7']],
      [4343, 'vmm', ['/dev/vfio/devices/vfio0']],
    ]);
    const e = await rejected(removeMdev(A, { sysfsRoot, procRoot }));
    expect(e.code).toBe('EBUSY');
    expect(e.message).toBe(
      `mediated device ${A} may be open: pid 4242 (qemu) holds /dev/vfio/7; pid 4343 (vmm) holds /dev/vfio/devices/vfio0`,
    );
    expect(e.hint).toMatch(/--wait/);
    expect(fs.readFileSync(path.join(parentDir(sysfsRoot), A, 'remove'), 'utf8')).toBe('');
  });

  it('says a removal is already under way', async () => {
    makeMdevSysfs(sysfsRoot, TYPES, [{ uuid: A, type: 'mtty-1', group: 7, removing: true }]);
    const e = await rejected(removeMdev(A, { sysfsRoot, procRoot }));
    expect(e.code).toBe('EALREADY');
  });

  it('names the devices there are when the UUID is unknown', async () => {
    makeMdevSysfs(sysfsRoot, TYPES, [{ uuid: A, type: 'mtty-1', group: 7 }]);
    const e = await rejected(removeMdev(C, { sysfsRoot, procRoot }));
    expect(e.code).toBe('ENOENT');
    expect(e.hint).toBe(`the mediated devices here: ${A} (mtty-1)`);
  });

  it('reports a removal the kernel is still holding as EPENDING at the deadline, without blocking', async () => {
    makeMdevSysfs(sysfsRoot, TYPES, [{ uuid: A, type: 'mtty-1', group: 7 }]);
    const remove = path.join(parentDir(sysfsRoot), A, 'remove');
    fifo(remove); // the writer blocks, as the kernel holds it while a VFIO fd is open
    const ticks = setInterval(() => undefined, 10);
    const t0 = Date.now();
    const e = await rejected(removeMdev(A, { sysfsRoot, procRoot, timeoutMs: 300 }));
    clearInterval(ticks);
    expect(e.code).toBe('EPENDING');
    expect(e.message).toMatch(/is pending: the kernel has waited 300 ms/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    // Let the helper finish, as the last fd closing would.
    fs.readFileSync(remove);
  });

  it('waits with whenOpen "wait" until the kernel lets the writer go, and times it', async () => {
    makeMdevSysfs(sysfsRoot, TYPES, [{ uuid: A, type: 'mtty-1', group: 7 }]);
    fs.rmSync(procRoot, { recursive: true });
    makeProc(procRoot, 1, { 1: { comm: 'self', fds: [] }, 77: { comm: 'vmm', fds: ['/dev/vfio/7'] } });
    const dir = path.join(parentDir(sysfsRoot), A);
    const remove = path.join(dir, 'remove');
    fifo(remove);
    const removal = removeMdev(A, { sysfsRoot, procRoot, whenOpen: 'wait' });
    await new Promise((r) => setTimeout(r, 700));
    // The holder closes: the kernel removes the device and lets the writer go.
    fs.rmSync(path.join(sysfsRoot, 'bus/mdev/devices', A));
    const fd = fs.openSync(remove, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const r = await removal;
    fs.closeSync(fd);
    expect(r).toMatchObject({ uuid: A, parent: 'mtty', type: 'mtty-1' });
    expect(r.heldBy.map((h) => h.pid)).toEqual([77]);
    expect(r.ms).toBeGreaterThan(0);
  });

  it('hands on the errno of a refused write with its meaning', async () => {
    makeMdevSysfs(sysfsRoot, TYPES, [{ uuid: A, type: 'mtty-1', group: 7 }]);
    const remove = path.join(parentDir(sysfsRoot), A, 'remove');
    fs.rmSync(remove);
    fs.mkdirSync(remove); // writing a directory fails with EISDIR
    const e = await rejected(removeMdev(A, { sysfsRoot, procRoot }));
    expect(e.code).toBe('EISDIR');
    expect(e.message).toMatch(new RegExp(`^cannot remove ${A}: EISDIR`));
  });

  it('removes a device nobody holds', async () => {
    makeMdevSysfs(sysfsRoot, TYPES, [{ uuid: A, type: 'mtty-1', group: 7 }]);
    addMdev(sysfsRoot, { uuid: B, type: 'mtty-1', group: 8 });
    const remove = path.join(parentDir(sysfsRoot), B, 'remove');
    fifo(remove);
    const removal = removeMdev(B, { sysfsRoot, procRoot });
    fs.rmSync(path.join(sysfsRoot, 'bus/mdev/devices', B));
    const text = await new Promise<string>((resolve) => {
      fs.readFile(remove, 'utf8', (_e, s) => resolve(s));
    });
    await removal;
    expect(text).toBe('1');
  });
});
