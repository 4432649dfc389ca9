/**
 * The lab guest's machine and what it is told: the QEMU command line, the file its init reads
 * (which devices to check and bind, what to keep visible), the script that runs the command, and
 * the environment that hands the devices' roles and addresses to the tests.
 */
import * as path from 'node:path';

import type { Layout, PlacedDevice } from './layout';

/**
 * An AMD model with SVM and nested paging: the guest loads kvm-amd and runs KVM guests of its own.
 * The features dropped are those TCG cannot emulate, which QEMU would warn about.
 */
export const LAB_CPU =
  'EPYC,+svm,+npt,-rdseed,-sha-ni,-xsavec,-3dnowprefetch,-misalignsse,-osvw,-topoext,-fxsr-opt,-nrip-save';

/** The guest kernel's command line before the user's --append. */
export const LAB_APPEND =
  // no_timer_check: on a loaded host, TCG can miss the boot-time timer IRQ check, which then panics
  // ("timer doesn't work through Interrupt-remapped IO-APIC") although the timer works.
  'console=ttyS0 intel_iommu=on quiet loglevel=3 panic=-1 no_timer_check rdinit=/init';

/** What the machine is made of besides the devices. */
export interface MachineOptions {
  /** The QEMU executable. */
  qemu: string;
  kernel: string;
  initramfs: string;
  runDir: string;
  /** Guest RAM in MiB. */
  memoryMiB: number;
  /** vCPUs (1 unless asked: see qemuArgs). */
  cpus?: number;
  /** Extra kernel arguments. */
  append: string;
  /** Extra QEMU arguments, as given. */
  extra: readonly string[];
}

/**
 * qemuArgs: the lab guest's QEMU arguments (without the program). One vCPU unless `cpus` asks for
 * more: with two, QEMU 7.2's multi-threaded TCG now and then let one vCPU run kernel text the other
 * had just patched (static keys, which KVM flips as VMs come and go), and Debian's kernel died of an
 * int3 Oops. The lab's own kernel has no jump labels, so its static keys patch nothing; more vCPUs
 * are for measuring what needs CPUs of its own (a VMM's vCPU threads beside its event loop). The host's
 * root is the guest's, read-only over 9p, and the run directory a second, writable export; both
 * sit at slots 10 and 11, away from the devices.
 */
export function qemuArgs(layout: Layout, m: MachineOptions): string[] {
  return [
    ...[
      '-M',
      'q35',
      '-accel',
      'tcg,thread=multi',
      '-smp',
      String(m.cpus ?? 1),
      '-m',
      String(m.memoryMiB),
      '-cpu',
      LAB_CPU,
    ],
    ...['-nodefaults', '-display', 'none', '-no-reboot'],
    ...['-chardev', 'stdio,id=con,signal=on', '-serial', 'chardev:con'],
    ...['-device', 'intel-iommu,intremap=on,caching-mode=on'],
    ...['-kernel', m.kernel, '-initrd', m.initramfs, '-append', `${LAB_APPEND} ${m.append}`.trim()],
    ...layout.qemuArgs,
    ...m.extra,
    ...['-fsdev', 'local,id=hostfs,path=/,security_model=none,readonly=on,multidevs=remap'],
    ...['-device', 'virtio-9p-pci,fsdev=hostfs,mount_tag=host,addr=10.0'],
    ...['-fsdev', `local,id=labfs,path=${m.runDir.replaceAll(',', ',,')},security_model=none`],
    ...['-device', 'virtio-9p-pci,fsdev=labfs,mount_tag=lab,addr=11.0'],
  ];
}

/** `s` as one word for sh: as is when it is plain, else single-quoted. */
export function shQuote(s: string): string {
  return /^[A-Za-z0-9_/.,:=@%+-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** An environment variable's name for a role's backing file: VFIO_BRIDGE_HIL_<ROLE>_FILE. */
export function fileVariable(role: string): string {
  return `VFIO_BRIDGE_HIL_${role.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_FILE`;
}

const onVfio = (d: PlacedDevice): boolean => d.driver === 'vfio-pci';
const onKernel = (d: PlacedDevice): boolean => d.driver !== null && d.driver !== 'vfio-pci';

/**
 * hilEnvironment: what the tests read: `VFIO_BRIDGE_HIL_DEVICES` (role=BDF of the devices on
 * vfio-pci), `VFIO_BRIDGE_HIL_KERNEL_DEVICES` (driver=BDF of those left on a kernel driver) and
 * `VFIO_BRIDGE_HIL_<ROLE>_FILE` for each backing file.
 */
export function hilEnvironment(layout: Layout): Record<string, string> {
  const env: Record<string, string> = {
    VFIO_BRIDGE_HIL_DEVICES: layout.devices
      .filter(onVfio)
      .map((d) => `${d.role}=${d.bdf}`)
      .join(','),
  };
  const kernel = layout.devices.filter(onKernel);
  if (kernel.length > 0)
    env['VFIO_BRIDGE_HIL_KERNEL_DEVICES'] = kernel.map((d) => `${d.driver}=${d.bdf}`).join(',');
  for (const d of layout.devices) if (d.file && d.driver !== null) env[fileVariable(d.role)] = d.file.path;
  return env;
}

/**
 * guestPlan: the file the guest's init sources (sh syntax): the devices to check and bind
 * (`role=vendor:device@BDF`, `*` for any IDs), those to find on their kernel driver, the run
 * directory, and the host paths under /tmp to keep visible over the guest's own /tmp, one a line.
 */
export function guestPlan(
  layout: Layout,
  runDir: string,
  keep: readonly string[],
  timeoutSeconds?: number,
): string {
  const spec = (name: string, d: PlacedDevice): string => `${name}=${d.ids ?? '*'}@${d.bdf}`;
  const lines = {
    LAB_DEVICES: layout.devices
      .filter(onVfio)
      .map((d) => spec(d.role, d))
      .join(' '),
    LAB_KERNEL_DEVICES: layout.devices
      .filter(onKernel)
      .map((d) => spec(d.driver!, d))
      .join(' '),
    LAB_RUN_DIR: runDir,
    LAB_KEEP: keep.filter((p) => p === '/tmp' || p.startsWith('/tmp/')).join('\n'),
    // init.sh says where every task waits shortly before the host's timeout kills the guest.
    LAB_TIMEOUT: timeoutSeconds !== undefined ? String(Math.floor(timeoutSeconds)) : '',
  };
  return Object.entries(lines)
    .map(([k, v]) => `${k}=${shQuote(v)}\n`)
    .join('');
}

/** What {@link commandScript} runs, and where. */
export interface CommandOptions {
  argv: readonly string[];
  cwd: string;
  env: Readonly<Record<string, string>>;
  /** The host's PATH, which the guest's root (the host's own) serves as well. */
  path: string;
}

/**
 * commandScript: the bash script the guest runs in the host's root. Output goes through a pipe,
 * not the console's tty, so tools print plain lines (no progress redraws or colours); the status
 * is the command's, which init writes to the run directory.
 */
export function commandScript(c: CommandOptions): string {
  const env = { PATH: c.path, ...c.env };
  return [
    'set -e',
    'export HOME=/tmp/home XDG_CACHE_HOME=/tmp/cache TMPDIR=/tmp',
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shQuote(v)}`),
    'mkdir -p "$HOME" "$XDG_CACHE_HOME"',
    `cd ${shQuote(c.cwd)}`,
    'set +e',
    `( ${c.argv.map(shQuote).join(' ')} ) 2>&1 | cat`,
    'exit "${PIPESTATUS[0]}"',
    '',
  ].join('\n');
}

/** The paths the guest must see although they are under /tmp: the project and the backing files the user named. */
export function keptPaths(layout: Layout, project: string): string[] {
  const files = layout.devices.filter((d) => d.file && d.file.make === null).map((d) => d.file!.path);
  return [...new Set([path.resolve(project), ...files])];
}
