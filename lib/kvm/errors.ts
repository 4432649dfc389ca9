import { KvmError } from '../base';

/**
 * A KVM failure that has no errno of its own: a missing capability (`'ENOCAP'`), a KVM API version
 * other than 12 (`'EVERSION'`), no free memory slot (`'ENOSLOT'`), use after close (`'ECLOSED'`).
 * KVM ioctl failures are the same {@link KvmError}s, thrown by the addon with the errno's name as code.
 */
export function kvmError(
  op: string,
  code: string,
  message: string,
  hint?: string,
  path = '/dev/kvm',
): KvmError {
  return new KvmError({ message, code, op, path, hint });
}

/** The error for an object used after close. */
export function closedError(op: string, what: string, path: string): KvmError {
  return kvmError(
    op,
    'ECLOSED',
    `${op} failed: the ${what} is closed`,
    'the object was closed; open a new one',
    path,
  );
}
