/**
 * The one file that loads the native addon. Everything else imports the typed binding from here.
 *
 * The addon is found by node-gyp-build: `build/Release` during development, or
 * `prebuilds/linux-x64/` in a published package (set `PREBUILDS_ONLY=1` to ignore `build/`).
 * The path is relative to this file's directory, so it works from `lib/` (tests) and `dist/`.
 */
import * as path from 'node:path';

/** An owned file descriptor inside the addon (container, group or device). Opaque to JavaScript. */
export interface NativeHandle {
  readonly __vfioBridgeHandle: never;
}

/**
 * The accessors of one mapping, bound to it natively. The single accessors take no arguments:
 * the offset goes in as a uint64 at byte 0 of `scratch`, and the value (loaded or to store) sits
 * at byte 8, because passing them as N-API arguments costs more than the access itself.
 */
export interface NativeMapping {
  readonly scratch: ArrayBuffer;
  read8(): void;
  read16(): void;
  read32(): void;
  read64(): void;
  write8(): void;
  write16(): void;
  write32(): void;
  write64(): void;
  readBlock(offset: number, count: number, width: number, into: ArrayBufferView): void;
  writeBlock(offset: number, data: ArrayBufferView, width: number): void;
  close(): void;
}

/**
 * Builds every error the addon throws (registered by lib/vfio), so errors belong to the caller's
 * realm. `kind` 'RangeError' and 'TypeError' use only `message`.
 */
export type NativeErrorFactory = (
  kind: 'VfioError' | 'RangeError' | 'TypeError',
  op: string,
  code: string | undefined,
  errno: number | undefined,
  message: string,
  path: string | undefined,
  bdf: string | undefined,
) => Error;

/** The native interface. Raw ioctl results come back as Buffers and are parsed in lib/vfio/uapi. */
export interface NativeBinding {
  /** The cheapest possible N-API call: the benchmark baseline. */
  noop(): void;
  setErrorFactory(factory: NativeErrorFactory): void;

  openFd(path: string): NativeHandle;
  closeFd(handle: NativeHandle): void;
  fdOf(handle: NativeHandle): number;

  mmap(
    fd: number,
    offset: number,
    length: number,
    writable: boolean,
    path: string | undefined,
    bdf: string | undefined,
  ): NativeMapping;
  memfd(name: string, size: number): number;

  vfioGetApiVersion(container: NativeHandle): number;
  vfioCheckExtension(container: NativeHandle, extension: number): number;
  vfioSetIommu(container: NativeHandle, type: number): void;
  vfioIommuInfo(container: NativeHandle): Buffer;
  memlockLimit(): [bigint, bigint];

  vfioGroupStatus(group: NativeHandle): number;
  vfioGroupSetContainer(group: NativeHandle, container: NativeHandle): void;
  vfioGroupUnsetContainer(group: NativeHandle): void;
  vfioGroupGetDeviceFd(group: NativeHandle, device: string): NativeHandle;

  vfioDeviceInfo(device: NativeHandle): Buffer;
  vfioRegionInfo(device: NativeHandle, index: number): Buffer;
  vfioIrqInfo(device: NativeHandle, index: number): Buffer;
  vfioDeviceReset(device: NativeHandle): void;
  pread(device: NativeHandle, offset: number, size: number): number | bigint;
  pwrite(device: NativeHandle, offset: number, size: number, value: number | bigint): void;
  preadBlock(device: NativeHandle, offset: number, length: number): Buffer;
  pwriteBlock(device: NativeHandle, offset: number, data: Uint8Array): void;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;

/** The loaded addon. */
export const native = nodeGypBuild(path.join(__dirname, '..')) as NativeBinding;
