/**
 * Handing a device's IOMMU group to a user, as libvirt does for a guest's devices: the group's
 * node /dev/vfio/N is chowned to the user, who can then open the group without root. The state
 * file records it, so restore and unbind give the node back to root.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import { fileError, UsageError } from './errors';
import type { DriverState } from './state';

/** A user to hand a group to. */
export interface VfioUser {
  name: string;
  uid: number;
  gid: number;
}

/**
 * resolveUser: `name` (or a numeric uid) from the passwd file (default /etc/passwd).
 * @throws UsageError when there is no such user
 */
export function resolveUser(name: string, passwdFile = '/etc/passwd'): VfioUser {
  let text = '';
  try {
    text = fs.readFileSync(passwdFile, 'utf8');
  } catch (e) {
    throw fileError(e, {
      lead: `cannot read ${passwdFile} to look up user ${name}`,
      op: 'read',
      path: passwdFile,
      hint: () => 'give the user as a numeric uid instead',
    });
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4) continue;
    if (f[0] === name || f[2] === name) return { name: f[0], uid: Number(f[2]), gid: Number(f[3]) };
  }
  if (/^[0-9]+$/.test(name)) return { name, uid: Number(name), gid: Number(name) };
  throw new UsageError(
    `there is no user ${JSON.stringify(name)} in ${passwdFile}`,
    'name an existing user (getent passwd NAME), or give a numeric uid',
  );
}

async function waitForNode(node: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(node)) {
    if (Date.now() >= deadline) {
      throw new VfioError({
        message: `${node} did not appear within ${timeoutMs} ms`,
        code: 'ENOENT',
        errno: 2,
        op: 'stat',
        path: node,
        hint: 'is devtmpfs (or udev) creating /dev/vfio nodes? --timeout MS waits longer',
      });
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

function chown(node: string, uid: number, gid: number, who: string): void {
  try {
    fs.chownSync(node, uid, gid);
  } catch (e) {
    throw fileError(e, {
      lead: `cannot hand ${node} to ${who}`,
      op: 'chown',
      path: node,
      hint: (code) => (code === 'EPERM' ? 'handing a group to a user needs root' : 'see dmesg'),
    });
  }
}

/**
 * handGroupTo: chown each group's node to `user` (once the node exists) and record it.
 * @param groups the IOMMU group numbers of the devices just bound to vfio-pci
 */
export async function handGroupsTo(
  groups: readonly number[],
  user: VfioUser,
  state: DriverState,
  opts: { vfioDevDir?: string; timeoutMs: number },
): Promise<void> {
  for (const g of [...new Set(groups)]) {
    const node = path.join(opts.vfioDevDir ?? '/dev/vfio', String(g));
    await waitForNode(node, opts.timeoutMs);
    chown(node, user.uid, user.gid, `user ${user.name}`);
    state.rememberOwner(g, user.name, user.uid, user.gid);
  }
}

/** giveBackGroup: if `group`'s node was handed to a user, give it back to root and forget it. */
export function giveBackGroup(group: number | null, state: DriverState, vfioDevDir = '/dev/vfio'): void {
  if (group === null || state.owner(group) === undefined) return;
  const node = path.join(vfioDevDir, String(group));
  // A node that is gone (the group left vfio-pci) comes back root's when it is created again.
  if (fs.existsSync(node)) chown(node, 0, 0, 'root');
  state.forgetOwner(group);
}
