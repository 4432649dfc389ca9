/**
 * The guest error an address space reports for an access it refused (source `memory`). A guest can
 * make these as fast as it can exit, so the record is a class whose `message` is formatted only when
 * read (by a log line or a listener), not for every access.
 */
import type { GuestError, GuestErrorAction } from '../base/guest-error';
import type { UnassignedAccess, UnassignedReason } from './unassigned';

/** The guest-error kind of each reason an access was refused. */
const KINDS: Record<UnassignedReason, string> = {
  unassigned: 'unassigned',
  rejected: 'access-rejected',
  unaligned: 'access-unaligned',
  'invalid-size': 'access-invalid-size',
  readonly: 'write-readonly',
  fault: 'bar-fault',
};

const HINTS: Record<UnassignedReason, string> = {
  unassigned: 'nothing is mapped there: a guest driver probing, or a BAR the guest has not placed',
  rejected: "the region's accepts() refused the access",
  unaligned: 'the region accepts only aligned accesses',
  'invalid-size': "the access width is outside the region's valid sizes",
  readonly: 'the region is read-only',
  fault: 'the device memory faulted: a BAR vfio-pci revoked (decode off, or a reset in progress)',
};

/** One refused access as a GuestError; `detail` is the address space's own record of it. @internal */
export class UnassignedReport implements GuestError {
  readonly source = 'memory' as const;
  readonly kind: string;
  readonly where: string;
  readonly address: number;
  readonly width: number;
  readonly write: boolean;
  readonly action: GuestErrorAction;
  readonly hint: string;
  readonly error: unknown;
  readonly detail: UnassignedAccess;

  constructor(space: string, e: UnassignedAccess) {
    this.kind = KINDS[e.reason];
    this.where = space;
    this.address = e.addr;
    this.width = e.size;
    this.write = e.isWrite;
    this.action = e.isWrite ? 'dropped' : 'read-all-ones';
    this.hint = HINTS[e.reason];
    this.error = e.error;
    this.detail = e;
  }

  /** `<space>: <reason> <read|write> at 0x<addr> size <n>[ in '<region>']`. */
  get message(): string {
    const e = this.detail;
    return (
      `${this.where}: ${e.reason} ${e.isWrite ? 'write' : 'read'} at 0x${e.addr.toString(16)} size ${e.size}` +
      (e.region !== undefined ? ` in '${e.region}'` : '')
    );
  }

  /** The record with its message, as JSON.stringify and a spread would want it. */
  toJSON(): GuestError {
    return { ...this, message: this.message };
  }
}
