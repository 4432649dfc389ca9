/**
 * PCI hot (bus) reset of a VFIO device: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO decoded, the group fds a
 * VFIO_DEVICE_PCI_HOT_RESET passes to prove this process owns what it resets, and the errors naming
 * what it does not own.
 */
import { VfioError } from '../base/native-errors';
import { viewOf } from '../base/values';
import { findOpenGroup } from './open-objects';

/**
 * VFIO_PCI_HOT_RESET_FLAG_DEV_ID: the device asked through its cdev (iommufd), so the entries name
 * devices by their iommufd IDs, not groups.
 */
export const VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1 << 0;
/** VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED: every affected device is owned by the caller. */
export const VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 1 << 1;
/** VFIO_PCI_DEVID_NOT_OWNED: (u32)-1, an affected device the caller does not own. */
export const VFIO_PCI_DEVID_NOT_OWNED = 0xffff_ffff;

/** One device a PCI hot (bus) reset of a device would reset with it. */
export interface HotResetDevice {
  /** The device's IOMMU group (-1 when the entries carry iommufd device IDs instead). */
  readonly group: number;
  /**
   * With VFIO_PCI_HOT_RESET_FLAG_DEV_ID: its ID in the caller's iommufd, 0 when the caller owns it
   * without having bound it there, VFIO_PCI_DEVID_NOT_OWNED when it does not own it.
   */
  readonly devId?: number;
  /** Its PCI address, `SSSS:BB:DD.F`. */
  readonly bdf: string;
  /** The PCI segment (domain) number, the `SSSS` of `bdf`. */
  readonly segment: number;
  /** The PCI bus number, the `BB` of `bdf`. */
  readonly bus: number;
  /** Device and function in one byte, as PCI packs them: device << 3 | function. */
  readonly devfn: number;
}

/** VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, decoded. */
export interface HotResetInfo {
  /** The answer's flags as the kernel returned them; VFIO_PCI_HOT_RESET_FLAG_DEV_ID says `devId` is set. */
  readonly flags: number;
  /** Every device a bus reset of this device also resets, itself included, in the kernel's order. */
  readonly devices: readonly HotResetDevice[];
  /** The distinct IOMMU groups among `devices`: every one must be open in this process (type1). */
  readonly groups: readonly number[];
}

const HEADER = 12;
const ENTRY = 8;

/** Decodes the raw VFIO_DEVICE_GET_PCI_HOT_RESET_INFO answer. */
export function parseHotResetInfo(buf: Uint8Array): HotResetInfo {
  if (buf.length < HEADER) {
    throw new VfioError({
      message: `hot reset info of ${buf.length} bytes is shorter than its header`,
      code: 'EPROTO',
      op: 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO',
    });
  }
  const dv = viewOf(buf);
  const flags = dv.getUint32(4, true);
  const count = dv.getUint32(8, true);
  if (HEADER + count * ENTRY > buf.length) {
    throw new VfioError({
      message: `hot reset info lists ${count} devices but holds ${Math.floor((buf.length - HEADER) / ENTRY)}`,
      code: 'EPROTO',
      op: 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO',
    });
  }
  const devices: HotResetDevice[] = [];
  for (let i = 0; i < count; i++) {
    const o = HEADER + i * ENTRY;
    const raw = dv.getUint32(o, true);
    const byId = (flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID) !== 0;
    const segment = dv.getUint16(o + 4, true);
    const bus = dv.getUint8(o + 6);
    const devfn = dv.getUint8(o + 7);
    const bdf =
      `${segment.toString(16).padStart(4, '0')}:${bus.toString(16).padStart(2, '0')}:` +
      `${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;
    devices.push(
      byId ? { group: -1, devId: raw, bdf, segment, bus, devfn } : { group: raw, bdf, segment, bus, devfn },
    );
  }
  const groups = [...new Set(devices.filter((d) => d.group >= 0).map((d) => d.group))].sort((a, b) => a - b);
  return { flags, devices, groups };
}

/**
 * The error for a hot reset that needs groups this process has not opened: it names each one with
 * its devices, since the kernel would only say EPERM.
 */
export function groupsNotOwnedError(bdf: string, info: HotResetInfo, missing: readonly number[]): VfioError {
  const list = missing
    .map(
      (g) =>
        `group ${g} (${info.devices
          .filter((d) => d.group === g)
          .map((d) => d.bdf)
          .join(', ')})`,
    )
    .join('; ');
  return new VfioError({
    message: `hot reset of ${bdf} needs groups this process does not own: ${list}`,
    code: 'EGROUPS',
    op: 'VFIO_DEVICE_PCI_HOT_RESET',
    bdf,
    hint:
      'a bus reset resets every device on the bus: open each listed group in this process (Group.open(n)) ' +
      'and pass it, or use Device.reset() if the device has a function reset',
  });
}

/**
 * The error for a hot reset of a device opened through its cdev when the bus holds devices this
 * process does not own (VFIO_PCI_DEVID_NOT_OWNED): the kernel would only say EPERM.
 */
export function devicesNotOwnedError(bdf: string, info: HotResetInfo): VfioError {
  const list = info.devices
    .filter((d) => d.devId === VFIO_PCI_DEVID_NOT_OWNED)
    .map((d) => d.bdf)
    .join(', ');
  return new VfioError({
    message: `hot reset of ${bdf} would reset devices this process does not own: ${list}`,
    code: 'EDEVICES',
    op: 'VFIO_DEVICE_PCI_HOT_RESET',
    bdf,
    hint:
      'on iommufd a bus reset needs every device on the bus open through its cdev and bound to the same ' +
      'iommufd in this process; or use Device.reset() if the device has a function reset',
  });
}

/**
 * The fd of every group a bus reset affects, from `groups` or else the groups open in this
 * environment; throws naming the groups not open here. A device opened through its cdev proves
 * ownership through its iommufd instead: no fds (an empty array).
 */
export function hotResetFds(
  bdf: string,
  info: HotResetInfo,
  groups?: readonly { readonly number: number; readonly fd: number }[],
): Int32Array {
  if ((info.flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID) !== 0) {
    if (info.devices.some((d) => d.devId === VFIO_PCI_DEVID_NOT_OWNED)) throw devicesNotOwnedError(bdf, info);
    return new Int32Array(0);
  }
  const fds: number[] = [];
  const missing: number[] = [];
  for (const n of info.groups) {
    const g = groups !== undefined ? groups.find((x) => x.number === n) : findOpenGroup(n);
    const fd = g?.fd ?? -1;
    if (fd < 0) missing.push(n);
    else fds.push(fd);
  }
  if (missing.length > 0) throw groupsNotOwnedError(bdf, info, missing);
  return Int32Array.from(fds);
}
