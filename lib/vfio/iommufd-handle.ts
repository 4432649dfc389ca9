/**
 * The native handle behind each open Iommufd, apart from the Iommufd class, and the face an Iommufd
 * shows the objects made in it: IOASes, HWPTs and the device cdevs bound to it reach the fd and the
 * iommufd's calls through here, so that they need nothing of iommufd.ts, which makes them.
 */
import { closedError } from '../base/error';
import type { NativeHandle } from '../native';
import type { IommuHwInfo } from './iommufd-uapi';

/** What the handle table needs of an Iommufd: its node and whether it is closed. */
export interface IommufdLike {
  /** The node the iommufd was opened from, e.g. `/dev/iommu`. */
  readonly path: string;
  /** True once the iommufd was closed. */
  readonly closed: boolean;
}

/**
 * An open iommufd as the objects made in it see it: every member of {@link Iommufd} but the two
 * that hand out IOASes (`allocIoas`, `ioases`), which are the Iommufd class's own. An IOAS's
 * `iommufd` is an Iommufd; from `allocIoas()` it is typed as one.
 */
export interface IommufdHandle extends IommufdLike, Disposable {
  /** The iommufd's fd (-1 once closed). */
  readonly fd: number;
  /** IOMMU_GET_HW_INFO: the IOMMU behind bound device `devId` (a Device's `iommufdDevId`). */
  hwInfo(devId: number): IommuHwInfo;
  /** Close the iommufd, and with it every IOAS allocated in it. Idempotent. */
  close(): void;
  /** IOMMU_DESTROY of an object of this iommufd. @internal */
  _destroy(id: number): void;
}

const handles = new WeakMap<IommufdLike, NativeHandle>();

/** Records `h` as the native handle of `fd` (the Iommufd constructor's call). @internal */
export function setIommufdHandle(fd: IommufdLike, h: NativeHandle): void {
  handles.set(fd, h);
}

/** The native handle of `fd` whether or not it is closed, for close() itself. @internal */
export function rawIommufdHandle(fd: IommufdLike): NativeHandle | undefined {
  return handles.get(fd);
}

/**
 * The iommufd's native handle, for the objects made in it and for binding device cdevs to it.
 * @throws VfioError ECLOSED naming `op` once it is closed @internal
 */
export function iommufdHandle(fd: IommufdLike, op: string): NativeHandle {
  const h = handles.get(fd);
  if (h === undefined || fd.closed) throw closedError(op, 'the iommufd', { path: fd.path });
  return h;
}
