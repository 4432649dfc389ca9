/**
 * The VFIO groups and devices open in this process, by IOMMU group number and by device name. A
 * hot reset needs the fd of every group it touches, and a device must not be opened twice; the
 * group and device modules both consult these tables, so the tables live apart from both and each
 * of them imports only this file. The entries are weak: a Group or Device dropped without close()
 * is still collected, releases its node, and stops counting as open.
 */

/** What the tables need of a Group: its number, its fd and whether it is closed. */
export interface OpenGroupEntry {
  /** The IOMMU group number. */
  readonly number: number;
  /** The group fd, -1 once closed. */
  readonly fd: number;
  /** True once the group was closed. */
  readonly closed: boolean;
}

/** What the tables need of a Device: its name and whether it is closed. */
export interface OpenDeviceEntry {
  /** The PCI address or mediated device UUID the device was opened by. */
  readonly bdf: string;
  /** True once the device was closed. */
  readonly closed: boolean;
}

const groups = new Map<number, WeakRef<OpenGroupEntry>>();
const devices = new Map<string, { ref: WeakRef<OpenDeviceEntry>; group: string }>();

/** Records `g` as the open group of its number (the newest one wins). @internal */
export function addOpenGroup(g: OpenGroupEntry): void {
  groups.set(g.number, new WeakRef(g));
}

/** Forgets `g` when it is still the group recorded for its number. @internal */
export function removeOpenGroup(g: OpenGroupEntry): void {
  if (groups.get(g.number)?.deref() === g) groups.delete(g.number);
}

/** The group open for IOMMU group `n` in this process and not closed, or undefined. @internal */
export function findOpenGroup(n: number): OpenGroupEntry | undefined {
  const g = groups.get(n)?.deref();
  return g && !g.closed ? g : undefined;
}

/** Records `d`, opened through `group` (the group node or cdev path), as open. @internal */
export function addOpenDevice(d: OpenDeviceEntry, group: string): void {
  devices.set(d.bdf, { ref: new WeakRef(d), group });
}

/** Forgets `d` when it is still the device recorded for its name. @internal */
export function removeOpenDevice(d: OpenDeviceEntry): void {
  if (devices.get(d.bdf)?.ref.deref() === d) devices.delete(d.bdf);
}

/**
 * Where device `bdf` is already open in this process, or undefined. A device that was collected
 * without close() had its fd released with it, so it no longer counts. @internal
 */
export function openDeviceOwner(bdf: string): string | undefined {
  const e = devices.get(bdf);
  if (e === undefined) return undefined;
  const d = e.ref.deref();
  if (d === undefined || d.closed) {
    devices.delete(bdf);
    return undefined;
  }
  return `a Device from ${e.group}`;
}
