import { ArgRangeError, ArgTypeError, KvmError, VfioError } from '../base/error';
import { decodeCpuid, type CpuidEntry } from './x86';
import { native, type NativeHandle } from '../native';
import { closedError, kvmError } from './errors';
import { KVM_API_VERSION, KVM_CAP, type KvmCapName } from './uapi';
import { Vm } from './vm';

/** What {@link Kvm.open} checks before handing out the system fd. */
export interface KvmOpenOptions {
  /** The device node (default `/dev/kvm`). */
  path?: string;
  /** Capabilities a VM of this VMM cannot do without (default: what a passthrough VMM needs). */
  require?: readonly KvmCapName[];
}

/** The capabilities a passthrough VMM built on lib/kvm needs. */
export const PASSTHROUGH_CAPS: readonly KvmCapName[] = [
  'USER_MEMORY',
  'IRQCHIP',
  'IRQ_ROUTING',
  'IRQFD',
  'IOEVENTFD',
  'SIGNAL_MSI',
  'IMMEDIATE_EXIT',
  'DEVICE_CTRL',
];

/**
 * The KVM system fd (`/dev/kvm`): the API version, capabilities, and VM creation. Close it with
 * {@link Kvm.close} or `using`; VMs created from it stay usable after it closes.
 *
 * Errors: no `/dev/kvm` is a VfioError `ENOENT`, no permission `EACCES`, an API other than 12
 * `EVERSION`, a missing required capability `ENOCAP` naming it; each carries a hint.
 */
export class Kvm implements Disposable {
  /** The device node opened (default `/dev/kvm`); VMs and vCPUs name themselves after it in errors. */
  readonly path: string;
  /** KVM_GET_API_VERSION (always 12). */
  readonly apiVersion: number;
  /** Size of each vCPU's kvm_run mapping. */
  readonly vcpuMmapSize: number;
  readonly #handle: NativeHandle;
  #closed = false;

  private constructor(handle: NativeHandle, path: string, version: number) {
    this.#handle = handle;
    this.path = path;
    this.apiVersion = version;
    this.vcpuMmapSize = native.kvmGetVcpuMmapSize(handle);
  }

  /** Open `/dev/kvm`, check the API version and the required capabilities. */
  static open(opts: KvmOpenOptions = {}): Kvm {
    const path = opts.path ?? '/dev/kvm';
    if (typeof path !== 'string') throw new ArgTypeError('Kvm.open: path must be a string');
    const require = opts.require ?? PASSTHROUGH_CAPS;
    for (const c of require) {
      if (!(c in KVM_CAP)) throw new ArgRangeError(`Kvm.open: unknown capability ${String(c)}`);
    }
    let h: NativeHandle;
    try {
      h = native.openFd(path);
    } catch (e) {
      // Any KVM node, wherever it lives, fails as a KVM error (the addon names it by path).
      if (e instanceof VfioError && !(e instanceof KvmError)) {
        const { message, code, op, errno, syscall, hint } = e;
        throw new KvmError({ message, code, op, errno, syscall, path, hint, cause: e });
      }
      throw e;
    }
    try {
      const version = native.kvmGetApiVersion(h);
      if (version !== KVM_API_VERSION) {
        throw kvmError(
          'KVM_GET_API_VERSION',
          'EVERSION',
          `${path} speaks KVM API version ${version}, vfio-bridge needs ${KVM_API_VERSION}`,
          'this kernel predates the stable KVM API',
          path,
        );
      }
      const kvm = new Kvm(h, path, version);
      const missing = require.filter((c) => !kvm.hasCapability(c));
      if (missing.length > 0) {
        throw kvmError(
          'KVM_CHECK_EXTENSION',
          'ENOCAP',
          `${path} lacks ${missing.map((c) => `KVM_CAP_${c}`).join(', ')}`,
          'a passthrough VMM needs an in-kernel irqchip, irqfd and ioeventfd: use a newer kernel, or pass `require` to ask for less',
          path,
        );
      }
      return kvm;
    } catch (e) {
      native.closeFd(h);
      throw e;
    }
  }

  /** KVM_CHECK_EXTENSION: the capability's value (0 = absent). */
  checkExtension(cap: KvmCapName | number): number {
    const n = typeof cap === 'number' ? cap : KVM_CAP[cap];
    if (n === undefined) throw new ArgRangeError(`unknown capability ${String(cap)}`);
    return native.kvmCheckExtension(this.#open('KVM_CHECK_EXTENSION'), n);
  }

  /** True when KVM_CHECK_EXTENSION reports the capability. */
  hasCapability(cap: KvmCapName): boolean {
    return this.checkExtension(cap) > 0;
  }

  /** KVM_GET_SUPPORTED_CPUID: every CPUID leaf this KVM and host can give a guest. */
  supportedCpuid(): CpuidEntry[] {
    return decodeCpuid(native.kvmGetSupportedCpuid(this.#open('KVM_GET_SUPPORTED_CPUID')));
  }

  /** Create a VM (KVM_CREATE_VM). */
  createVm(): Vm {
    const h = native.kvmCreateVm(this.#open('KVM_CREATE_VM'));
    return Vm._create(h, this);
  }

  /**
   * {@link createVm} with KVM_CREATE_VM on the libuv thread pool (a nested KVM takes milliseconds to
   * set a VM up). Like a VM made by createVm, the VM outlives a {@link Kvm.close} meanwhile.
   */
  async createVmAsync(): Promise<Vm> {
    return Vm._create(await native.kvmCreateVmAsync(this.#open('KVM_CREATE_VM')), this);
  }

  /** Whether {@link Kvm.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Close the system fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.closeFd(this.#handle);
  }

  /** Same as {@link Kvm.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(op: string): NativeHandle {
    if (this.#closed) throw closedError(op, 'KVM system fd', this.path);
    return this.#handle;
  }
}
