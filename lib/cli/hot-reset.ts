/**
 * `reset BDF --hot`: a secondary bus (or slot) reset through VFIO_DEVICE_PCI_HOT_RESET. The kernel
 * resets every device on the bus, so it wants the fd of every IOMMU group involved; this opens each
 * one the hot-reset info lists, after checking in sysfs that it can be opened and used, so the
 * operator learns which group is in the way and how to fix it instead of a bare EPERM.
 */
import { VfioError } from '../base/native-errors';
import { Group } from '../vfio/group';
import type { HotResetInfo } from '../vfio/hot-reset';
import { driverKeepsViable, groupMembers, type GroupMember, type SysfsOptions } from '../vfio/sysfs';
import { resetMethods } from './pci-sysfs';
import { openVfioDevice } from './vfio-open';

/** What `reset --hot --json` reports: the hot-reset info the kernel gave, as the reset used it. */
export interface HotResetResult {
  bdf: string;
  method: 'hot';
  flags: number;
  devices: { bdf: string; group: number }[];
  groups: number[];
}

/** Why a group listed by the hot-reset info cannot take part, or null when it can. */
function groupProblem(members: GroupMember[]): string | null {
  if (members.length === 0) return 'it has no devices in sysfs';
  const blocking = members.filter((m) => !driverKeepsViable(m.driver));
  if (blocking.length > 0) {
    return `not viable: ${blocking.map((m) => `${m.bdf} is on ${m.driver}`).join(', ')}`;
  }
  if (!members.some((m) => m.driver?.startsWith('vfio') === true)) {
    return 'no device of it is bound to vfio-pci, so it has no /dev/vfio node to open';
  }
  return null;
}

/**
 * Checks in sysfs that every group `info` lists can be opened and is viable.
 * @throws VfioError EGROUPS naming each group in the way, with its devices and the bind command
 */
export function checkHotResetGroups(bdf: string, info: HotResetInfo, sysfs: SysfsOptions = {}): void {
  const problems: { group: number; members: GroupMember[]; why: string }[] = [];
  for (const g of info.groups) {
    const members = groupMembers(g, sysfs);
    const why = groupProblem(members);
    if (why !== null) problems.push({ group: g, members, why });
  }
  if (problems.length === 0) return;
  const fixes = problems.map((p) => {
    const first = p.members[0]?.bdf ?? info.devices.find((d) => d.group === p.group)?.bdf ?? '?';
    return `vfio-bridge bind --group ${first}`;
  });
  throw new VfioError({
    message:
      `hot reset of ${bdf} resets every device on its bus, and ${problems.length === 1 ? 'a group' : 'groups'} ` +
      `it needs cannot be used: ` +
      problems.map((p) => `group ${p.group} (${p.why})`).join('; '),
    code: 'EGROUPS',
    op: 'VFIO_DEVICE_PCI_HOT_RESET',
    bdf,
    hint:
      `bind every device of ${problems.length === 1 ? 'that group' : 'those groups'} to vfio-pci ` +
      `(\`${fixes.join('`, `')}\`) and make sure no other process holds them; ` +
      '`vfio-bridge restore` puts the devices back afterwards',
  });
}

/** The error for a device the kernel cannot hot-reset (hot-reset info answered ENODEV). */
function noHotReset(bdf: string, cause: VfioError, sysfs: SysfsOptions): VfioError {
  let methods: string[] = [];
  try {
    methods = resetMethods(bdf, sysfs);
  } catch {
    // Only for the hint: the refusal stands without it.
  }
  return new VfioError({
    message: `${bdf} cannot be hot-reset: the kernel offers no bus or slot reset that covers it`,
    code: cause.code,
    ...(cause.errno !== undefined ? { errno: cause.errno } : {}),
    op: 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO',
    bdf,
    hint:
      'its bus holds devices that cannot be reset with it, or its bridge cannot reset the bus; ' +
      (methods.length > 0
        ? `use its function reset instead (\`vfio-bridge reset ${bdf}\`; the kernel lists: ${methods.join(', ')})`
        : 'the kernel lists no reset method for it at all'),
  });
}

/** Open `bdf` and every group its hot reset involves, and perform the hot reset. */
export function hotReset(bdf: string, sysfs: SysfsOptions = {}): HotResetResult {
  // A hot reset proves ownership of every group on the bus by its fd: the container/group uAPI.
  using v = openVfioDevice(bdf, sysfs, 'type1');
  const own = v.group!;
  let info: HotResetInfo;
  try {
    info = v.device.hotResetInfo();
  } catch (e) {
    if (e instanceof VfioError && (e.code === 'ENODEV' || e.code === 'ENOTTY'))
      throw noHotReset(bdf, e, sysfs);
    throw e;
  }
  checkHotResetGroups(bdf, info, sysfs);
  const opened: Group[] = [];
  try {
    const groups = info.groups.map((n) => {
      if (n === own.number) return own;
      const g = Group.open(n, sysfs);
      opened.push(g);
      return g;
    });
    v.device.hotReset(groups);
  } finally {
    for (const g of opened) g.close();
  }
  return {
    bdf,
    method: 'hot',
    flags: info.flags,
    devices: info.devices.map((d) => ({ bdf: d.bdf, group: d.group })),
    groups: [...info.groups],
  };
}
