// How the addon's failures become VfioErrors: errno names, and hints for the common cases. Loading
// this file (lib/base does) registers the factory with the addon.
import * as os from 'node:os';
import * as util from 'node:util';

import { native, onNativeLoad, type NativeErrorFactory } from '../native';
import { ArgRangeError, ArgTypeError, KvmError, VfioError, type VfioErrorInit } from './error';

export { KvmError, VfioError, type VfioErrorInit } from './error';

let errnoNames: Map<number, string> | undefined;

/** os.constants.errno inverted; the first name wins for aliases (EAGAIN over EWOULDBLOCK). */
function osErrnoName(errno: number): string | undefined {
  if (errnoNames === undefined) {
    errnoNames = new Map();
    for (const [name, value] of Object.entries(os.constants.errno)) {
      if (!errnoNames.has(value)) errnoNames.set(value, name);
    }
  }
  return errnoNames.get(errno);
}

/**
 * The errno name for a positive errno (`1` -> `'EPERM'`, `35` -> `'EDEADLK'`), or `E<number>` for
 * one that has no name. libuv answers errnos it does not know (EDEADLK among them) with the
 * sentence "Unknown system error -N" rather than throwing, so only a real name is taken from it.
 */
export function errnoName(errno: number): string {
  let name: string | undefined;
  try {
    name = util.getSystemErrorName(-errno);
  } catch {
    // Not a negative integer libuv accepts: fall through to the other sources.
  }
  if (name !== undefined && /^E[A-Z0-9]+$/.test(name)) return name;
  return osErrnoName(errno) ?? `E${errno}`;
}

const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

function formatLimit(v: bigint): string {
  if (v === RLIM_INFINITY) return 'unlimited';
  return v >= 1024n ? `${v / 1024n} KiB` : `${v} bytes`;
}

/** RLIMIT_MEMLOCK's current soft and hard limits, as text for a hint. */
export function memlockLimitText(): string {
  try {
    const [soft, hard] = native.memlockLimit();
    return `${formatLimit(soft)} (hard limit ${formatLimit(hard)})`;
  } catch {
    // The limit is only decoration for the hint; the original error is what gets thrown.
    return 'unknown';
  }
}

/** The hint text for RLIMIT_MEMLOCK, showing the current soft and hard limits. */
export function memlockHint(): string {
  const limits = memlockLimitText();
  return (
    `RLIMIT_MEMLOCK is ${limits}. Memory pinned for DMA counts against it: raise it ` +
    `(ulimit -l, LimitMEMLOCK= in a systemd unit, or memlock in /etc/security/limits.conf) or run as root`
  );
}

/**
 * The operations that pin memory for DMA, the only ones whose ENOMEM can come from RLIMIT_MEMLOCK.
 * (type1 and iommufd pin on map; the sPAPR IOMMU's memory registration is not driven here.)
 */
const PINNING_OPS: ReadonlySet<string> = new Set(['VFIO_IOMMU_MAP_DMA', 'IOMMU_IOAS_MAP']);

/** Context for {@link hintFor}. */
export interface HintContext {
  op: string;
  code: string;
  path?: string | undefined;
  bdf?: string | undefined;
}

/**
 * The hint for the common failures: permissions on /dev/vfio, a busy group, a missing group node,
 * RLIMIT_MEMLOCK when pinning memory for DMA, no room for a mapping, a region that cannot be mapped
 * there, a revoked mapping, use after close.
 * Returns undefined when there is nothing better to say than the error itself.
 */
export function hintFor(ctx: HintContext): string | undefined {
  const { op, code, path } = ctx;
  const isGroupNode = path !== undefined && /^\/dev\/vfio\/(noiommu-)?\d+$/.test(path);
  const isVfioNode = path !== undefined && path.startsWith('/dev/vfio/');
  const isCdevNode = path !== undefined && /^\/dev\/vfio\/devices\/vfio\d+$/.test(path);
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      if (op === 'mmap') return 'the mapping was refused: a read-only region or fd cannot be mapped writable';
      if (path === '/dev/kvm')
        return 'no permission on /dev/kvm: run as root or add the user to the kvm group';
      if (op === 'open' && path === '/dev/iommu') {
        return (
          'no permission on /dev/iommu (root-only by default): run as root, or give this user read/write ' +
          "access with a udev rule, or use the type1 backend (backend: 'type1') through /dev/vfio"
        );
      }
      if (isVfioNode) {
        return (
          `no permission on ${path}: run as root, or give this user read/write access to the node ` +
          `(chown/chmod, or a udev rule for the vfio group)`
        );
      }
      return undefined;
    case 'EBUSY':
      if (op === 'VFIO_GROUP_GET_DEVICE_FD') {
        // A second open in this process is refused before the ioctl (naming the owner), so the
        // kernel's EBUSY comes from outside: the vfio cdev, or a driver that allows one open.
        return (
          `${ctx.bdf ?? 'the device'} is busy in the kernel: it is open through another interface ` +
          `(its vfio cdev under /dev/vfio/devices) or by another user of this group; close that first`
        );
      }
      if (isCdevNode || op === 'VFIO_DEVICE_BIND_IOMMUFD') {
        return (
          `${ctx.bdf ?? 'the device'} is in use through its IOMMU group (/dev/vfio/N, by this or another ` +
          `process) or bound already: a device is reached through its group or its cdev, never both at once`
        );
      }
      if (isGroupNode) {
        return (
          `the group is already open elsewhere: another process (check \`fuser ${path}\`), another ` +
          `Group object in this process, or one of its devices through its cdev (/dev/vfio/devices, ` +
          `the iommufd backend); a group can be opened only once, and not beside a device cdev`
        );
      }
      return undefined;
    case 'ENOENT':
      if (isGroupNode) {
        return `${path} does not exist: bind the group's devices to vfio-pci (modprobe vfio-pci), then retry`;
      }
      if (path === '/dev/vfio/vfio') return 'VFIO is not available: modprobe vfio-pci (and enable the IOMMU)';
      if (op === 'IOMMU_IOAS_UNMAP') {
        return 'nothing is mapped there, or the range would split a mapping (iommufd splits none): unmap whole mappings';
      }
      if (op === 'open' && path === '/dev/iommu') {
        return "the kernel has no iommufd (CONFIG_IOMMUFD; modprobe iommufd where it is a module): use backend 'type1'";
      }
      if (op === 'open' && isCdevNode) {
        return `${path} does not exist: the device left vfio-pci, or the kernel has no VFIO_DEVICE_CDEV`;
      }
      if (path === '/dev/kvm') {
        return 'KVM is not available: modprobe kvm_intel or kvm_amd, enable virtualization in the firmware, or nested virtualization in a VM';
      }
      return undefined;
    case 'ENOMEM':
      if (PINNING_OPS.has(op)) return memlockHint();
      if (op === 'mmap') {
        return (
          'no room for the mapping: the address space is exhausted (ulimit -v) or the process has ' +
          'reached vm.max_map_count mappings (sysctl vm.max_map_count); close unused mappings or raise the limit'
        );
      }
      return undefined;
    case 'EINVAL':
      if (op === 'VFIO_DEVICE_ATTACH_IOMMUFD_PT') {
        return (
          "the IOAS maps something in the device's reserved IOVA regions (the MSI window " +
          '0xfee00000-0xfeefffff), or the device is attached already: check ioas.dmaMappings()'
        );
      }
      if (op === 'mmap') {
        return (
          'the region is not mappable there: check regionInfo(index).mappable and its sparse-mmap ' +
          'areas, and map only inside them (the MSI-X table is often excluded)'
        );
      }
      return undefined;
    case 'SIGBUS':
      return (
        'vfio-pci revoked the mapping because memory decode is disabled in the command register or ' +
        'the device is being reset; enable memory space decode (or wait for the reset) and retry'
      );
    case 'ECLOSED':
      return 'the object was closed; open a new one';
    default:
      return undefined;
  }
}

/**
 * The factory the addon calls for every error it throws: for kernel failures it derives the code
 * from the errno and adds the hint. Exported for tests.
 */
export const makeNativeError: NativeErrorFactory = (kind, op, code, errno, message, path, bdf) => {
  if (kind === 'RangeError') return new ArgRangeError(message);
  if (kind === 'TypeError') return new ArgTypeError(message);
  const resolved = code ?? (errno !== undefined ? errnoName(errno) : 'EUNKNOWN');
  const init: VfioErrorInit = { message, code: resolved, op };
  if (errno !== undefined) init.errno = errno;
  if (path !== undefined) init.path = path;
  if (bdf !== undefined) init.bdf = bdf;
  const hint = hintFor({ op, code: resolved, path, bdf });
  if (hint !== undefined) init.hint = hint;
  return isKvm(op, path) ? new KvmError(init) : new VfioError(init);
};

/** A KVM operation: a KVM ioctl, or any call on /dev/kvm or on a VM or vCPU made from it. */
function isKvm(op: string, path: string | undefined): boolean {
  return op.startsWith('KVM_') || (path !== undefined && path.startsWith('/dev/kvm'));
}

onNativeLoad((binding) => binding.setErrorFactory(makeNativeError));
