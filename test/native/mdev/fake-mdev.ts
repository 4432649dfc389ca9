/**
 * A fake sysfs with an mdev parent laid out as the kernel lays out mtty's: the parent under
 * devices/virtual, its link in class/mdev_bus, types with name, device_api and available_instances,
 * and instances on the mdev bus with mdev_type, iommu_group, remove and vfio-dev. A fake /proc holds
 * processes whose fds point at group nodes. `kernelCreate` answers one write to a type's `create`
 * the way the mdev core does, from a child process (the write blocks on a FIFO until it reads).
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface FakeType {
  id: string;
  name?: string;
  description?: string;
  available: number;
}

export interface FakeMdev {
  uuid: string;
  type: string;
  group: number;
  cdev?: string;
  /** No `remove` attribute: a removal is under way. */
  removing?: boolean;
}

export const PARENT = 'mtty';

export function parentDir(root: string): string {
  return path.join(root, 'devices/virtual/mtty/mtty');
}

export function makeMdevSysfs(root: string, types: FakeType[], mdevs: FakeMdev[] = []): void {
  const parent = parentDir(root);
  fs.mkdirSync(path.join(root, 'class/mdev_bus'), { recursive: true });
  fs.mkdirSync(path.join(root, 'bus/mdev/devices'), { recursive: true });
  fs.mkdirSync(path.join(root, 'kernel/iommu_groups'), { recursive: true });
  fs.mkdirSync(parent, { recursive: true });
  fs.symlinkSync(
    path.relative(path.join(root, 'class/mdev_bus'), parent),
    path.join(root, 'class/mdev_bus', PARENT),
  );
  for (const t of types) {
    const dir = path.join(parent, 'mdev_supported_types', t.id);
    fs.mkdirSync(path.join(dir, 'devices'), { recursive: true });
    if (t.name !== undefined) fs.writeFileSync(path.join(dir, 'name'), `${t.name}\n`);
    if (t.description !== undefined) fs.writeFileSync(path.join(dir, 'description'), `${t.description}\n`);
    fs.writeFileSync(path.join(dir, 'device_api'), 'vfio-pci\n');
    fs.writeFileSync(path.join(dir, 'available_instances'), `${t.available}\n`);
    fs.writeFileSync(path.join(dir, 'create'), '');
  }
  for (const m of mdevs) addMdev(root, m);
}

type Op = ['mkdir' | 'write', string] | ['link', string, string];

/** The filesystem operations that make instance `m` (applied here, or by the fake kernel's child). */
function mdevOps(root: string, m: FakeMdev): Op[] {
  const parent = parentDir(root);
  const dir = path.join(parent, m.uuid);
  const groupDir = path.join(root, 'kernel/iommu_groups', String(m.group));
  const typeDevices = path.join(parent, 'mdev_supported_types', m.type, 'devices');
  const ops: Op[] = [
    ['mkdir', dir],
    ['mkdir', groupDir],
    ['link', path.relative(dir, groupDir), path.join(dir, 'iommu_group')],
  ];
  if (m.cdev !== undefined) ops.push(['mkdir', path.join(dir, 'vfio-dev', m.cdev)]);
  // A removal takes away `remove`, the type's links and the bus's at once; the directory stays
  // until the kernel has finished.
  if (m.removing) return ops;
  ops.push(['write', path.join(dir, 'remove')]);
  ops.push(['link', `../mdev_supported_types/${m.type}`, path.join(dir, 'mdev_type')]);
  ops.push([
    'link',
    path.relative(path.join(root, 'bus/mdev/devices'), dir),
    path.join(root, 'bus/mdev/devices', m.uuid),
  ]);
  ops.push(['link', path.relative(typeDevices, dir), path.join(typeDevices, m.uuid)]);
  return ops;
}

const APPLY = `function apply(ops) {
  for (const [kind, a, b] of ops) {
    if (kind === 'mkdir') fs.mkdirSync(a, { recursive: true });
    else if (kind === 'write') fs.writeFileSync(a, '');
    else fs.symlinkSync(a, b);
  }
}`;

export function addMdev(root: string, m: FakeMdev): void {
  const apply = new Function('fs', `${APPLY}; return apply;`)(fs) as (ops: Op[]) => void;
  apply(mdevOps(root, m));
}

/** A fake /proc: `procs` maps a pid to its command and the targets of its fds. */
export function makeProc(
  root: string,
  self: number,
  procs: Record<number, { comm: string; fds: string[] }>,
): void {
  fs.mkdirSync(root, { recursive: true });
  fs.symlinkSync(String(self), path.join(root, 'self'));
  for (const [pid, p] of Object.entries(procs)) {
    fs.mkdirSync(path.join(root, pid, 'fd'), { recursive: true });
    fs.writeFileSync(path.join(root, pid, 'comm'), `${p.comm}\n`);
    p.fds.forEach((t, i) => fs.symlinkSync(t, path.join(root, pid, 'fd', String(i + 3))));
  }
}

/** Makes `file` a FIFO, so a write to it blocks until a reader opens it. */
export function fifo(file: string): void {
  fs.rmSync(file, { force: true });
  execFileSync('mkfifo', [file]);
}

/**
 * The mdev core answering one write to `m.type`'s create (made a FIFO): a child process makes the
 * instance, then takes the write, as device_add does before the write returns. Resolves with what
 * was written.
 */
export function kernelCreate(root: string, m: FakeMdev): Promise<string> {
  const create = path.join(parentDir(root), 'mdev_supported_types', m.type, 'create');
  fifo(create);
  const script = `const fs = require('fs'); ${APPLY}
    apply(JSON.parse(process.argv[2]));
    process.stdout.write(fs.readFileSync(process.argv[1], 'utf8'));`;
  const child = spawn(process.execPath, ['-e', script, create, JSON.stringify(mdevOps(root, m))], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  return new Promise<string>((resolve) => child.on('close', () => resolve(out)));
}
