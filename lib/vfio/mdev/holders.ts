/**
 * Who may have a mediated device open: the processes holding its VFIO group node
 * (`/dev/vfio/<group>`, through which its device fd was opened) or its cdev, found in
 * `/proc/<pid>/fd`. A device fd itself is an anonymous inode that does not name its device, so the
 * group node is the sign: an mdev's group holds that device alone. This process's own Device objects
 * count as well (lib/vfio keeps a list of them).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { openDeviceOwner } from '../open-objects';
import type { MdevDevice } from './sysfs';

/** One process that holds the device's group node or cdev open. */
export interface MdevHolder {
  /** The holding process's ID. */
  readonly pid: number;
  /** Its command name (`/proc/<pid>/comm`). */
  readonly command: string;
  /** The device nodes it holds (`/dev/vfio/12`, `/dev/vfio/devices/vfio0`). */
  readonly nodes: readonly string[];
  /** True for this very process. */
  readonly self: boolean;
}

/** Who holds a device, and how many processes could not be looked at (other users', without root). */
export interface MdevHolders {
  /** Every process found holding the device's group node or cdev, by pid; empty when none was found. */
  readonly holders: readonly MdevHolder[];
  /** Where this process itself has it open as a Device (`a Device from /dev/vfio/12`), or null. */
  readonly openHere: string | null;
  /** Processes whose fds could not be read: they may hold it too. */
  readonly unreadable: number;
}

/** Where the process list is read (default `/proc`), for tests on fake trees. */
export interface ProcOptions {
  /** The proc mount point to read processes' fds from (default `/proc`). */
  procRoot?: string;
}

function readText(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return null; // the process went away, or cannot be read
  }
}

/** mdevHolders: the processes holding `device`'s group node or cdev, this one included. */
export function mdevHolders(device: MdevDevice, opts: ProcOptions = {}): MdevHolders {
  const procRoot = opts.procRoot ?? '/proc';
  const nodes = new Set<string>();
  if (device.iommuGroup !== null) nodes.add(`/dev/vfio/${device.iommuGroup}`);
  if (device.cdev !== null) nodes.add(device.cdev);
  const selfPid = procRoot === '/proc' ? process.pid : Number(readLinkOrNull(path.join(procRoot, 'self')));
  const holders: MdevHolder[] = [];
  let unreadable = 0;
  let pids: string[] = [];
  try {
    pids = fs.readdirSync(procRoot).filter((n) => /^\d+$/.test(n));
  } catch {
    pids = [];
  }
  for (const pid of pids) {
    const fdDir = path.join(procRoot, pid, 'fd');
    let fds: string[];
    try {
      fds = fs.readdirSync(fdDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') unreadable++;
      continue; // or the process ended meanwhile
    }
    const held = new Set<string>();
    for (const fd of fds) {
      const target = readLinkOrNull(path.join(fdDir, fd));
      if (target !== null && nodes.has(target)) held.add(target);
    }
    if (held.size === 0) continue;
    holders.push({
      pid: Number(pid),
      command: readText(path.join(procRoot, pid, 'comm')) ?? '?',
      nodes: [...held].sort(),
      self: Number(pid) === selfPid,
    });
  }
  return { holders, openHere: openDeviceOwner(device.uuid) ?? null, unreadable };
}

function readLinkOrNull(p: string): string | null {
  try {
    return fs.readlinkSync(p);
  } catch {
    return null;
  }
}

/** The holders as one line for a message: `pid 123 (node) holds /dev/vfio/12`. */
export function describeHolders(h: MdevHolders): string {
  const parts = h.holders.map(
    (x) => `pid ${x.pid} (${x.command}${x.self ? ', this process' : ''}) holds ${x.nodes.join(' and ')}`,
  );
  if (h.openHere !== null && !h.holders.some((x) => x.self)) parts.unshift(`this process (${h.openHere})`);
  return parts.join('; ');
}
