/**
 * The error class of the package, in the base layer so that every layer can throw it, those
 * running without the native addon (lib/pci on fakes) included, and lib/kvm without lib/vfio.
 */
/** What a {@link VfioError} is built from. */
export interface VfioErrorInit {
  message: string;
  code: string;
  op: string;
  errno?: number;
  path?: string;
  bdf?: string;
  hint?: string;
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
 * - `'ENOCAP'`: `/dev/kvm` lacks a capability the caller requires (lib/kvm).
 * - `'ENOSLOT'`: every KVM memory slot of the VM is in use (lib/kvm).
 * - `'ENOIRQCHIP'`: irqfd or KVM_SIGNAL_MSI without the in-kernel irqchip (lib/kvm).
 */
export class VfioError extends Error {
  override readonly name = 'VfioError';
  /** The errno name, or one of the vfio-bridge codes listed on the class. */
  readonly code: string;
  /** The positive errno, when the kernel returned one. */
  readonly errno?: number;
  /** The operation: an ioctl name (`'VFIO_GROUP_GET_STATUS'`), a syscall, or `'mapping.read32'`. */
  readonly op: string;
  /** The device node or file involved, e.g. `/dev/vfio/12`. */
  readonly path?: string;
  /** The PCI address of the device involved, e.g. `0000:00:03.0`. */
  readonly bdf?: string;
  /** What to do about it, for the common cases. */
  readonly hint?: string;

  constructor(init: VfioErrorInit) {
    super(init.hint ? `${init.message}\n  hint: ${init.hint}` : init.message);
    this.code = init.code;
    this.op = init.op;
    if (init.errno !== undefined) this.errno = init.errno;
    if (init.path !== undefined) this.path = init.path;
    if (init.bdf !== undefined) this.bdf = init.bdf;
    if (init.hint !== undefined) this.hint = init.hint;
  }
}

/** The error for use of `what` after close(), as every closed object of the package reports it. */
export function closedError(op: string, what: string, bdf?: string): VfioError {
  const init: VfioErrorInit = {
    message: `${op}: ${what} is closed`,
    code: 'ECLOSED',
    op,
    hint: 'the object was closed; open a new one',
  };
  if (bdf !== undefined) init.bdf = bdf;
  return new VfioError(init);
}
