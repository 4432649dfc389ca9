/**
 * The package's errors, in the base layer so that every layer can throw them, those running
 * without the native addon (lib/memory, lib/pci on fakes) included, and lib/kvm without lib/vfio.
 *
 * Everything the package throws at run time is a {@link VfioBridgeError}: `code` says what
 * happened, `hint` what to do about it (its own field, never folded into `message`), `cause` the
 * error it wraps; where a syscall failed, `errno` (negative), `syscall` and `path` are shaped like
 * Node's own `SystemError`. Each layer has its subclass: {@link VfioError}, {@link KvmError}, and
 * lib/vmm's VmmError, lib/dma's DmaCommitError, lib/memory's MemoryTopologyError, the CLI's errors.
 * {@link AbortError} is an operation its `AbortSignal` stopped, with the signal's reason as `cause`.
 *
 * Bad arguments are `TypeError`s and `RangeError`s, as Node's own are, with Node's `ERR_*` codes:
 * {@link ArgTypeError} (`ERR_INVALID_ARG_TYPE`) and {@link ArgRangeError} (`ERR_OUT_OF_RANGE`).
 */

/** What a {@link VfioBridgeError} is built from. */
export interface VfioBridgeErrorInit {
  /** The error's message: what failed and on what, without the hint. */
  message: string;
  /** What happened: an errno name (`'EBUSY'`) or one of the package's codes; becomes `code`. */
  code: string;
  /** What to do about it. */
  hint?: string | undefined;
  /** The error this one wraps. */
  cause?: unknown;
  /** The errno the kernel returned (either sign; stored negative, as Node's SystemError does). */
  errno?: number | undefined;
  /** The system call that failed (`'ioctl'`, `'open'`, `'mmap'`, ...). */
  syscall?: string | undefined;
  /** The file or device node involved. */
  path?: string | undefined;
}

/** The base class of everything vfio-bridge throws at run time. */
export class VfioBridgeError extends Error {
  /** `'VfioBridgeError'`, or the subclass's name. */
  override readonly name: string = 'VfioBridgeError';
  /** What happened: an errno name (`'EBUSY'`) or one of the package's codes (`'ECLOSED'`, ...). */
  readonly code: string;
  /** What to do about it, when there is something better to say than the error itself. */
  readonly hint?: string;
  /** The kernel's errno, negative (as `SystemError.errno`), when a system call failed. */
  readonly errno?: number;
  /** The system call that failed, when one did. */
  readonly syscall?: string;
  /** The file or device node involved, e.g. `/dev/vfio/12`. */
  readonly path?: string;

  constructor(init: VfioBridgeErrorInit) {
    super(init.message, init.cause !== undefined ? { cause: init.cause } : undefined);
    this.code = init.code;
    if (init.hint !== undefined) this.hint = init.hint;
    if (init.errno !== undefined) this.errno = -Math.abs(init.errno);
    if (init.syscall !== undefined) this.syscall = init.syscall;
    if (init.path !== undefined) this.path = init.path;
  }
}

/** What a {@link VfioError} or a {@link KvmError} is built from. */
export interface VfioErrorInit extends VfioBridgeErrorInit {
  /** The operation: an ioctl name (`'VFIO_GROUP_GET_STATUS'`), a syscall, or `'mapping.read32'`. */
  op: string;
  /** The PCI address of the device involved, e.g. `0000:00:03.0`. */
  bdf?: string | undefined;
}

/** The syscall behind an operation: ioctl names are all capitals. */
function syscallOf(op: string): string {
  return /^[A-Z][A-Z0-9_]+$/.test(op) ? 'ioctl' : op;
}

/**
 * A failed VFIO operation or device access.
 *
 * `code` is the errno name (`'EPERM'`, `'EBUSY'`, ...) when the kernel returned one, or one of:
 * - `'SIGBUS'`: a Mapping access faulted because vfio-pci revoked the mapping (memory decode
 *   disabled in the command register, or a reset in progress, Linux 5.8+). The process carries
 *   on; the access did not happen. The mapping works again once decode is back on.
 * - `'ECLOSED'`: the object (mapping, container, group, device) was used after `close()`.
 * - `'ESHORT'`: a pread/pwrite moved fewer bytes than asked.
 * - `'ENOTVIABLE'`: the group is not viable; the message lists its devices and their drivers.
 * - `'EVERSION'`: `/dev/vfio/vfio` speaks another VFIO API version.
 * - `'ENOIOMMU'`: the container supports none of the IOMMU types vfio-bridge drives.
 * - `'ENOGROUP'`: the container has no group attached yet.
 * - `'EPROTO'`: the kernel returned a malformed info structure or capability chain.
 * - `'ENOTMAPPABLE'`: the region does not support mmap.
 */
export class VfioError extends VfioBridgeError {
  /** `'VfioError'`. */
  override readonly name: string = 'VfioError';
  /** The operation: an ioctl name (`'VFIO_GROUP_GET_STATUS'`), a syscall, or `'mapping.read32'`. */
  readonly op: string;
  /** The PCI address of the device involved, e.g. `0000:00:03.0`. */
  readonly bdf?: string;

  constructor(init: VfioErrorInit) {
    super({ ...init, syscall: init.syscall ?? (init.errno !== undefined ? syscallOf(init.op) : undefined) });
    this.op = init.op;
    if (init.bdf !== undefined) this.bdf = init.bdf;
  }
}

/**
 * A failed KVM operation (lib/kvm). `code` is the errno name when the kernel returned one, or one of:
 * - `'ENOCAP'`: `/dev/kvm` lacks a capability the caller requires;
 * - `'EVERSION'`: a KVM API version other than 12;
 * - `'ENOSLOT'`: every memory slot of the VM is in use;
 * - `'ENOIRQCHIP'`: irqfd or KVM_SIGNAL_MSI without the in-kernel irqchip;
 * - `'ECLOSED'`: the object (KVM fd, VM, vCPU, exit table) was used after `close()`.
 */
export class KvmError extends VfioBridgeError {
  /** `'KvmError'`. */
  override readonly name: string = 'KvmError';
  /** The operation: an ioctl name (`'KVM_RUN'`) or a syscall. */
  readonly op: string;

  constructor(init: Omit<VfioErrorInit, 'bdf'>) {
    super({ ...init, syscall: init.syscall ?? (init.errno !== undefined ? syscallOf(init.op) : undefined) });
    this.op = init.op;
  }
}

/**
 * An operation its `AbortSignal` stopped, as Node reports one (name `AbortError`, code `ABORT_ERR`),
 * with the signal's reason as `cause`.
 */
export class AbortError extends VfioBridgeError {
  /** `'AbortError'`, as Node names an aborted operation's error. */
  override readonly name: string = 'AbortError';

  /** `what` names the operation, e.g. `0000:00:05.0 dump of BAR 2`. */
  constructor(what: string, reason: unknown) {
    super({ message: `${what} was aborted`, code: 'ABORT_ERR', cause: reason });
  }
}

/** A bad argument's type, as Node reports one: a TypeError with code `ERR_INVALID_ARG_TYPE`. */
export class ArgTypeError extends TypeError {
  /** Node's code for an argument of the wrong type. */
  readonly code = 'ERR_INVALID_ARG_TYPE';
}

/** A bad argument's value, as Node reports one: a RangeError with code `ERR_OUT_OF_RANGE`. */
export class ArgRangeError extends RangeError {
  /** Node's code for an argument outside its range. */
  readonly code = 'ERR_OUT_OF_RANGE';
}

/** Where a closed object was, for its {@link closedError}. */
export interface ClosedAt {
  /** The PCI address (or mediated device UUID) of the device the object belongs to, if it has one. */
  bdf?: string | undefined;
  /** The node the object was opened from (`/dev/vfio/12`, `/dev/kvm`), if it has one. */
  path?: string | undefined;
  /** What to do instead; unset, the hint is to open a new object. */
  hint?: string | undefined;
}

/**
 * closedError: the error for `what` (`'the container'`, `` `device ${bdf}` ``) used by `op` after
 * close(), as every closed object of the package reports it: code `'ECLOSED'`, the message
 * `` `${op} failed: ${what} is closed` ``, a hint, and the BDF and path where `at` has them (a
 * string `at` is the BDF). A VfioError, or whatever `make` builds from the same fields: lib/kvm
 * passes one that makes a KvmError.
 */
export function closedError(op: string, what: string, at?: string | ClosedAt): VfioError;
export function closedError<E extends VfioBridgeError>(
  op: string,
  what: string,
  at: string | ClosedAt | undefined,
  make: (init: VfioErrorInit) => E,
): E;
export function closedError(
  op: string,
  what: string,
  at: string | ClosedAt = {},
  make: (init: VfioErrorInit) => VfioBridgeError = (init) => new VfioError(init),
): VfioBridgeError {
  const { bdf, path, hint } = typeof at === 'string' ? { bdf: at, path: undefined, hint: undefined } : at;
  return make({
    message: `${op} failed: ${what} is closed`,
    code: 'ECLOSED',
    op,
    hint: hint ?? 'the object was closed; open a new one',
    bdf,
    path,
  });
}
