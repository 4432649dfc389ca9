import { KvmError, closedError as baseClosedError } from '../base';

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

/** lib/base's {@link baseClosedError} as a KvmError, for the KVM object `what` opened from `path`. */
export function closedError(op: string, what: string, path: string): KvmError {
  return baseClosedError(op, `the ${what}`, { path }, (init) => new KvmError(init));
}
