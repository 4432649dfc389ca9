import { VfioBridgeError } from '../base/error';

/**
 * Why the VMM refused to build the machine or to boot the guest it was given:
 * - `ENOTBZIMAGE`: the kernel is not a bzImage (no 0xAA55 boot flag or no "HdrS" setup header);
 * - `EPROTOCOL`: the bzImage's boot protocol is too old, or lacks the entry point asked for;
 * - `ECMDLINE`: the command line is longer than the kernel accepts, or holds a NUL;
 * - `ENOSPACE`: the kernel, the initramfs or a boot structure does not fit in guest RAM;
 * - `EE820`: the memory map is malformed (overlapping entries, too many, zero-sized);
 * - `EINPUT`: the kernel or initramfs file cannot be read;
 * - `EBUSY`: the machine is running and cannot do that now (a second run, a reboot);
 * - `ECLOSED`: the machine was closed;
 * - `ENOBOOT`: the machine has nothing to run, because its last reboot failed.
 */
export type VmmErrorCode =
  | 'ENOTBZIMAGE'
  | 'EPROTOCOL'
  | 'ECMDLINE'
  | 'ENOSPACE'
  | 'EE820'
  | 'EINPUT'
  | 'EBUSY'
  | 'ECLOSED'
  | 'ENOBOOT';

/** A bad machine description or boot input, with a `code` and a `hint` that says what to change. */
export class VmmError extends VfioBridgeError {
  override readonly name: string = 'VmmError';
  declare readonly code: VmmErrorCode;
  constructor(
    code: VmmErrorCode,
    message: string,
    hint?: string,
    opts: { cause?: unknown; path?: string } = {},
  ) {
    super({ code, message, hint, ...opts });
  }
}
