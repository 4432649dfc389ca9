/**
 * Creating a mediated device: a UUID written to its type's `create`. What the kernel would refuse is
 * refused here first, with what to do about it: an unknown parent or type, a type with no instance
 * left (`available_instances` 0: which instances use the parent, and how to remove one), a UUID
 * already in use.
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../../base/native-errors';
import type { SysfsOptions } from '../sysfs';
import {
  findMdev,
  listMdevs,
  mdevParent,
  mdevType,
  normalizeMdevUuid,
  sysfsError,
  type MdevDevice,
  type MdevType,
} from './sysfs';

/** Options of {@link createMdev}. */
export interface CreateMdevOptions extends SysfsOptions {
  /** The new device's UUID (default: a random one, crypto.randomUUID). */
  uuid?: string;
}

/**
 * createMdev: create an instance of type `type` (`mtty-1`, or `1`) of parent `parent` (`mtty`).
 * @returns the new device, read back from sysfs
 * @throws VfioError ENOENT (no such parent or type, with the ones there are), ENOSPC (no instance
 * left: the instances using the parent and how to remove one), EEXIST (UUID in use), EACCES (not
 * root), or the kernel's refusal with a hint
 */
export function createMdev(parent: string, type: string, opts: CreateMdevOptions = {}): MdevDevice {
  const t = mdevType(parent, type, opts);
  const uuid = normalizeMdevUuid(opts.uuid ?? randomUUID());
  const existing = findMdev(uuid, opts);
  if (existing !== null) throw inUse(uuid, existing, t);
  if (t.availableInstances === 0) throw exhausted(t, opts);
  const file = path.join(mdevParent(parent, opts).path, 'mdev_supported_types', t.id, 'create');
  try {
    fs.writeFileSync(file, uuid);
  } catch (e) {
    throw createFailed(e, file, uuid, t, opts);
  }
  const created = findMdev(uuid, opts);
  if (created === null) {
    throw new VfioError({
      message: `${file} took ${uuid}, but no mediated device ${uuid} appeared on the mdev bus`,
      code: 'EPROTO',
      op: 'write',
      path: file,
      hint: 'check dmesg for what the parent driver said',
    });
  }
  return created;
}

function inUse(uuid: string, d: MdevDevice, t: MdevType): VfioError {
  return new VfioError({
    message: `UUID ${uuid} is in use: mediated device ${uuid} exists (${d.parent} ${d.type})`,
    code: 'EEXIST',
    errno: 17,
    op: 'write',
    bdf: uuid,
    hint:
      `leave the UUID out to get a new one, or remove that device first (vfio-bridge mdev remove ${uuid})` +
      (d.type === t.id ? '; it is of the type asked for, so it may be the device you want' : ''),
  });
}

/** The refusal of a type with no instance left: who uses the parent, and how to free one. */
function exhausted(t: MdevType, opts: SysfsOptions): VfioError {
  const onParent = listMdevs(opts).filter((m) => m.parent === t.parent);
  const others = mdevParent(t.parent, opts).types.filter((x) => x.id !== t.id && x.availableInstances > 0);
  const list = onParent.map(
    (m) => `${m.uuid} (${[m.type, m.removing && 'being removed'].filter(Boolean).join(', ')})`,
  );
  return new VfioError({
    message:
      `mdev type ${t.id} of ${t.parent} has no instance left (available_instances is 0); ` +
      `${onParent.length} mediated device${onParent.length === 1 ? '' : 's'} use${onParent.length === 1 ? 's' : ''} ${t.parent}`,
    code: 'ENOSPC',
    errno: 28,
    op: 'write',
    path: path.join('mdev_supported_types', t.id, 'create'),
    hint:
      (list.length > 0
        ? `remove one of ${list.join(', ')} (vfio-bridge mdev remove UUID) to make room`
        : `nothing on ${t.parent} can be removed: the parent itself has no room left`) +
      (others.length > 0
        ? `; types of ${t.parent} that still have room: ${others.map((x) => `${x.id} (${x.availableInstances})`).join(', ')}`
        : ''),
  });
}

/** The kernel refused the write: its errno, with what it means for `create`. */
function createFailed(e: unknown, file: string, uuid: string, t: MdevType, opts: SysfsOptions): VfioError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'EEXIST') {
    const d = findMdev(uuid, opts);
    if (d !== null) return inUse(uuid, d, t);
  }
  if (code === 'ENOSPC' || code === 'EUSERS') {
    // Another creator took the last instance between the check and the write.
    let fresh = t;
    try {
      fresh = mdevType(t.parent, t.id, opts);
    } catch {
      // the parent went away: the error below still says what happened
    }
    const err = exhausted({ ...fresh, availableInstances: 0 }, opts);
    return new VfioError({ ...err, message: err.message, code, op: 'write', path: file, cause: e });
  }
  const base = sysfsError(e, 'write', file);
  const hints: Record<string, string> = {
    ENODEV: `${t.parent} is being unregistered (its driver is unloading)`,
    EINVAL: `${t.parent}'s driver refused ${uuid} for ${t.id}; check dmesg`,
  };
  const hint = code !== undefined ? hints[code] : undefined;
  return new VfioError({
    message: base.message,
    code: base.code,
    ...(base.errno !== undefined ? { errno: base.errno } : {}),
    op: 'write',
    path: file,
    bdf: uuid,
    cause: e,
    hint: hint ?? base.hint ?? 'check dmesg for what the parent driver said',
  });
}
