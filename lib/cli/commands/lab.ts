/** The lab command: a QEMU guest with the devices the user names on vfio-pci, running a command. */

import * as fs from 'node:fs';
import * as path from 'node:path';

import { Command } from 'commander';

import { UsageError } from '../errors';
import type { CliIo } from '../io';
import { DEVICE_SETS, parseDeviceSpec, PRESETS, ROLE_RE, type DeviceSpec } from '../lab/devices';
import { parseKernelRequest } from '../lab/kernel';
import {
  labEnvironment,
  labLayout,
  LAB_INIT,
  provisionLab,
  runLab,
  type LabRequest,
  type LabResult,
  type Provisioned,
} from '../lab/lab';
import type { Layout } from '../lab/layout';
import { qemuArgs, shQuote } from '../lab/machine';
import { defaultCacheDir, DEFAULT_QEMU } from '../lab/provision';
import { example, jsonOut } from './common';

interface LabFlags {
  device?: string[];
  preset?: string;
  module?: string[];
  vmmInit?: string;
  vmmModule?: string[];
  kernel?: string;
  modules?: string;
  kvm: boolean;
  project?: string;
  env?: string[];
  memory: string;
  cpus: string;
  append?: string;
  qemu?: string[];
  timeout?: string;
  lockWait?: string;
  cache?: string;
  keepFile?: string[];
  provision?: boolean;
  print?: boolean;
  json?: boolean;
}

const collect = (v: string, all: string[] = []): string[] => [...all, v];

const DEVICE_HELP = `
Devices (--device MODEL[,key=value...], written as QEMU's -device; double a comma inside a value):
${Object.entries(PRESETS)
  .map(([name, p]) => `  ${name.padEnd(9)} ${p.ids}  ${p.summary}`)
  .join('\n')}
  any other QEMU PCI model, with its own options (ids=VVVV:DDDD makes the guest check its IDs)
The lab's own keys: role=NAME (default: the model's name), driver=NAME (stay on that kernel
driver: listed in VFIO_BRIDGE_HIL_KERNEL_DEVICES), bind=off (left alone), port (behind a
pcie-root-port of its own; port.KEY=VALUE for the port, port.addr=SLOT), group=NAME (devices of a
group share one slot as functions: one IOMMU group), file=PATH or size=BYTES (nvme, ivshmem).
Without addr=SLOT a device takes the next free slot from 03; a root port's devices are on bus 01,
02, ... in slot order.
Device sets (--preset): ${Object.keys(DEVICE_SETS).join(', ')} (this project's own lab).

The command sees VFIO_BRIDGE_HIL_DEVICES (role=BDF of the devices on vfio-pci, which
vfio-bridge/testing reads), VFIO_BRIDGE_HIL_KERNEL_DEVICES, VFIO_BRIDGE_HIL_<ROLE>_FILE for each
backing file, VFIO_BRIDGE_VMM_KERNEL (and VFIO_BRIDGE_VMM_INITRD with --vmm-init), VFIO_BRIDGE_LAB=1,
CI as here, HOME and TMPDIR on a tmpfs. The host's root is the guest's, read-only: build first.
Kernel: built is the lab's own, built from Debian's linux-source-6.12 (apt-get download) on
tinyconfig and the package's scripts/lab/kernel/lab.config: IOMMUFD and /dev/vfio/devices beside the
type1 container, mdev and the mtty sample. The first build takes about 15 min on 2 CPUs (gcc, make,
flex, bison, bc and libelf-dev, installed with apt when root); after that it is cached in --cache
under a key of the source version and the config. auto takes a built one when the cache has it, else
the host's own when it has the Intel IOMMU, vfio-pci, virtio-pci, 9p, kvm-amd and the modules named,
else Debian's 6.12 package (apt-get download), cached in --cache. The command sees the kernel's
modules directory as VFIO_BRIDGE_LAB_MODULES (for insmod).
Environment: VFIO_BRIDGE_LAB_CACHE, VFIO_BRIDGE_LAB_KERNEL, VFIO_BRIDGE_LAB_TIMEOUT,
VFIO_BRIDGE_LAB_LOCK_WAIT and VFIO_BRIDGE_LAB_APPEND give the defaults of those options;
VFIO_BRIDGE_LAB_QEMU names QEMU (default qemu-system-x86_64 on PATH); VFIO_BRIDGE_LAB_LOCK the file
whose lock lets one guest run at a time (default CACHE/guest.lock).
Exit status: the command's; 1 the lab failed (a "lab: FAIL" line from the guest says where, or the
kernel build failed: the end of its log is shown), 2 the command line is wrong, 3 this host cannot
provide QEMU, busybox, a kernel or the tools to build one, 75 the guest stopped running while the
command ran (QEMU used no CPU for 90 s; the picture of its CPUs from QEMU's monitor is printed; nothing
was decided, run it again), 124 --timeout ran out.
`;

function seconds(text: string, option: string): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text.trim()) || !(n > 0))
    throw new UsageError(
      `${option} ${JSON.stringify(text)} is not a number of seconds`,
      `e.g. ${option} 600`,
    );
  return n;
}

function names(lists: readonly string[], option: string): string[] {
  const out = lists
    .flatMap((l) => l.split(','))
    .map((m) => m.trim())
    .filter(Boolean);
  const bad = out.find((m) => !/^[A-Za-z0-9_-]+$/.test(m));
  if (bad !== undefined)
    throw new UsageError(
      `${option} ${JSON.stringify(bad)} is not a module name`,
      'name modules as lsmod does, e.g. nvme,e1000e',
    );
  return out;
}

function pairs(list: readonly string[], option: string, keyRe: RegExp, example: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0 || !keyRe.test(item.slice(0, eq)))
      throw new UsageError(
        `${option} ${JSON.stringify(item)} is not NAME=VALUE`,
        `e.g. ${option} ${example}`,
      );
    out.set(item.slice(0, eq), item.slice(eq + 1));
  }
  return out;
}

/** The nearest directory up from `dir` with a package.json, else `dir`: a project the guest must see whole. */
function projectOf(dir: string): string {
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return d;
    if (path.dirname(d) === d) return dir;
  }
}

/** The request the flags and the command describe. @throws UsageError for any bad part */
function request(flags: LabFlags, argv: string[], io: CliIo): LabRequest {
  const specs: DeviceSpec[] = [];
  if (flags.preset !== undefined) {
    const set = Object.hasOwn(DEVICE_SETS, flags.preset) ? DEVICE_SETS[flags.preset] : undefined;
    if (set === undefined)
      throw new UsageError(
        `no device set ${JSON.stringify(flags.preset)}`,
        `one of ${Object.keys(DEVICE_SETS).join(', ')}`,
      );
    specs.push(...set.map(parseDeviceSpec));
  }
  specs.push(...(flags.device ?? []).map(parseDeviceSpec));
  if (specs.length === 0 && !flags.provision)
    throw new UsageError(
      'no devices',
      'name them with --device (e.g. --device nvme), or a set with --preset',
    );
  if (argv.length === 0 && !flags.provision && !flags.print)
    throw new UsageError(
      'no command to run in the lab',
      'give it after --: vfio-bridge lab --device nvme -- npx jest',
    );
  const cwd = process.cwd();
  const project = path.resolve(flags.project ?? projectOf(cwd));
  if (!fs.statSync(project, { throwIfNoEntry: false })?.isDirectory())
    throw new UsageError(`--project ${project}: no such directory`, 'name the directory the command runs in');
  const vmmInit = flags.vmmInit !== undefined ? path.resolve(flags.vmmInit) : undefined;
  if (vmmInit !== undefined && !fs.existsSync(vmmInit))
    throw new UsageError(`--vmm-init ${vmmInit}: no such file`, "name the nested guest's /init script");
  const vmmModules = names(flags.vmmModule ?? [], '--vmm-module');
  if (vmmModules.length > 0 && vmmInit === undefined)
    throw new UsageError(
      '--vmm-module without --vmm-init',
      "the nested guest's initramfs needs an /init: name it with --vmm-init",
    );
  const memoryMiB = Number(flags.memory);
  if (!/^[0-9]+$/.test(flags.memory) || memoryMiB < 256)
    throw new UsageError(
      `--memory ${JSON.stringify(flags.memory)} is not a size in MiB of at least 256`,
      'e.g. --memory 4096',
    );
  const cpus = Number(flags.cpus);
  if (!/^[1-8]$/.test(flags.cpus))
    throw new UsageError(
      `--cpus ${JSON.stringify(flags.cpus)} is not a vCPU count from 1 to 8`,
      'e.g. --cpus 2 (one host thread each: more than the host has only slows the lab)',
    );
  const cache = path.resolve(flags.cache ?? defaultCacheDir(io.env));
  const env = Object.fromEntries(
    pairs(flags.env ?? [], '--env', /^[A-Za-z_][A-Za-z0-9_]*$/, 'VFIO_BRIDGE_DEVICES_REQUIRED=1'),
  );
  return {
    specs,
    modules: names(flags.module ?? [], '--module'),
    ...(vmmInit !== undefined ? { vmmInit } : {}),
    vmmModules,
    kernel: parseKernelRequest(flags.kernel ?? io.env['VFIO_BRIDGE_LAB_KERNEL'] ?? 'auto', flags.modules),
    kvm: flags.kvm,
    project,
    cwd: cwd === project || cwd.startsWith(`${project}/`) ? cwd : project,
    argv,
    env: { ...(io.env['CI'] ? { CI: io.env['CI'] } : {}), ...env },
    hostPath: io.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin',
    cache,
    append: flags.append ?? io.env['VFIO_BRIDGE_LAB_APPEND'] ?? '',
    qemuBinary: io.env['VFIO_BRIDGE_LAB_QEMU'] || DEFAULT_QEMU,
    qemu: (flags.qemu ?? []).flatMap((q) => q.split(/\s+/)).filter(Boolean),
    memoryMiB,
    cpus,
    timeoutSeconds: seconds(flags.timeout ?? io.env['VFIO_BRIDGE_LAB_TIMEOUT'] ?? '600', '--timeout'),
    lockWaitSeconds: seconds(flags.lockWait ?? io.env['VFIO_BRIDGE_LAB_LOCK_WAIT'] ?? '1200', '--lock-wait'),
    guestLock: path.resolve(io.env['VFIO_BRIDGE_LAB_LOCK'] || path.join(cache, 'guest.lock')),
    keepFiles: pairs(flags.keepFile ?? [], '--keep-file', ROLE_RE, 'ivshmem=/tmp/shm.bin'),
  };
}

/** The devices as the JSON and --print show them. */
function deviceRows(layout: Layout): Record<string, unknown>[] {
  return layout.devices.map((d) => ({
    role: d.role,
    bdf: d.bdf,
    model: d.spec.model,
    driver: d.driver,
    ids: d.ids,
    file: d.file?.path ?? null,
  }));
}

/** --print: what a run would boot, without provisioning anything. */
function printPlan(io: CliIo, r: LabRequest, flags: LabFlags): void {
  const runDir = path.join(r.cache, 'run.XXXXXX');
  const layout = labLayout(r, runDir);
  const env = labEnvironment(r, layout, null);
  const args = qemuArgs(layout, {
    qemu: r.qemuBinary,
    kernel: '<kernel>',
    initramfs: '<initramfs>',
    runDir,
    memoryMiB: r.memoryMiB,
    cpus: r.cpus,
    append: r.append,
    extra: r.qemu,
  });
  if (flags.json) {
    jsonOut(io, 'lab', {
      kernel: null,
      devices: deviceRows(layout),
      environment: env,
      qemu: [r.qemuBinary, ...args],
      init: LAB_INIT,
      status: null,
      seconds: null,
    });
    return;
  }
  const rows = [
    ['role', 'BDF', 'driver', 'model', 'ids'],
    ...layout.devices.map((d) => [d.role, d.bdf, d.driver ?? '(left alone)', d.spec.model, d.ids ?? '*']),
  ];
  const width = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows)
    io.out(
      row
        .map((c, i) => c.padEnd(width[i]))
        .join('  ')
        .trimEnd() + '\n',
    );
  io.out(
    '\n' +
      Object.entries(env)
        .map(([k, v]) => `${k}=${v}\n`)
        .join(''),
  );
  io.out(
    `\n${r.qemuBinary}${args.map((a) => (a.startsWith('-') ? ` \\\n  ${a}` : ` ${shQuote(a)}`)).join('')}\n`,
  );
}

/** The lab command. `setStatus` receives the command's exit status. */
export function addLabCommand(program: Command, io: CliIo, setStatus: (status: number) => void): void {
  example(
    program
      .command('lab')
      .description(
        'boot a QEMU guest with the PCI devices you name bound to vfio-pci (real kernel, emulated IOMMU, ' +
          "KVM inside), and run a command in your project there; its exit status is the command's",
      )
      .argument('[command...]', 'the command to run in the guest, after --')
      .option(
        '-d, --device <spec>',
        'a device: a preset or any QEMU PCI model, with options (repeatable; see below)',
        collect,
      )
      .option('--preset <name>', `a device set: ${Object.keys(DEVICE_SETS).join(', ')}`)
      .option(
        '--module <names>',
        "guest kernel modules to load besides the lab's (comma-separated; dependencies follow)",
        collect,
      )
      .option(
        '--vmm-init <file>',
        "a nested guest's /init: build its initramfs (VFIO_BRIDGE_VMM_INITRD) from the lab's kernel",
      )
      .option('--vmm-module <names>', "modules for the nested guest's initramfs (comma-separated)", collect)
      .option(
        '--kernel <kernel>',
        'auto, built, host, debian, a Debian package, or a path (a bzImage, or a directory as a package unpacks)',
      )
      .option('--modules <dir>', 'the lib/modules/VERSION directory of a --kernel given by path')
      .option('--no-kvm', 'do not load kvm-amd in the guest (a kernel without it will do)')
      .option(
        '-C, --project <dir>',
        'the project the guest must see (default: the nearest with a package.json)',
      )
      .option('-e, --env <name=value>', 'a variable for the command (repeatable)', collect)
      .option('--memory <MiB>', 'guest RAM', '2048')
      .option(
        '--cpus <n>',
        "the lab guest's vCPUs (more than one: measuring what needs CPUs of its own; use --kernel built)",
        '1',
      )
      .option('--append <args>', 'extra guest kernel arguments')
      .option(
        '--qemu <args>',
        'extra QEMU arguments, split at spaces, e.g. a backend a model needs (repeatable)',
        collect,
      )
      .option('--timeout <seconds>', 'kill the guest after this long (default 600)')
      .option('--lock-wait <seconds>', "how long to wait for another run's guest (default 1200)")
      .option('--cache <dir>', 'where kernels and images are kept (default ~/.cache/vfio-bridge/lab)')
      .option(
        '--keep-file <role=path>',
        "copy a device's backing file there after the run (repeatable)",
        collect,
      )
      .option('--provision', 'only provision the kernel and images, and say which kernel')
      .option('--print', 'print the devices, the environment and the QEMU command line; boot nothing')
      .option('--json', 'print a JSON summary on stdout (the guest console goes to stderr)')
      .addHelpText('after', DEVICE_HELP),
    'vfio-bridge lab --device nvme -- npx jest test/nvme.test.ts',
    'vfio-bridge lab --device edu,port --device e1000e,group=g --device rtl8139,group=g -- npm test',
    'vfio-bridge lab --device nvme,file=disk.img --print',
  ).action(async (argv: string[], flags: LabFlags) => {
    const r = request(flags, argv, io);
    // Laid out once before anything is provisioned, so that a layout it cannot make fails at once.
    const plan = labLayout(r, path.join(r.cache, 'run.XXXXXX'));
    for (const role of r.keepFiles.keys()) {
      const d = plan.devices.find((x) => x.role === role);
      if (!d?.file)
        throw new UsageError(
          `--keep-file ${role}: no device of that role has a backing file`,
          'nvme and ivshmem have one',
        );
    }
    if (flags.print) {
      printPlan(io, r, flags);
      return;
    }
    const say = (line: string): void => io.err(`lab: ${line}\n`);
    const p: Provisioned = await provisionLab(r, say, io.signal);
    say(`provision took ${p.seconds} s (cache ${r.cache})`);
    if (flags.provision) {
      if (flags.json) summary(io, r, p, null);
      return;
    }
    const result = await runLab(r, p, {
      say,
      console: (line) => (flags.json ? io.err : io.out)(`${line}\n`),
      ...(io.signal ? { signal: io.signal } : {}),
    });
    if (flags.json) summary(io, r, p, result);
    setStatus(result.status);
  });
}

/** The JSON summary of a run (or of provisioning alone). */
function summary(io: CliIo, r: LabRequest, p: Provisioned, result: LabResult | null): void {
  const runDir = path.join(r.cache, 'run.XXXXXX');
  const layout = result?.layout ?? labLayout(r, runDir);
  const t = p.kernel.tree;
  jsonOut(io, 'lab', {
    kernel: { source: t.source, version: t.version, path: t.vmlinuz, reason: p.kernel.reason },
    devices: deviceRows(layout),
    environment: labEnvironment(r, layout, p),
    qemu: [
      r.qemuBinary,
      ...qemuArgs(layout, {
        qemu: r.qemuBinary,
        kernel: t.vmlinuz,
        initramfs: p.initramfs,
        runDir,
        memoryMiB: r.memoryMiB,
        cpus: r.cpus,
        append: r.append,
        extra: r.qemu,
      }),
    ],
    init: LAB_INIT,
    status: result?.status ?? null,
    seconds: {
      provision: p.seconds,
      wait: result?.waitSeconds ?? null,
      boot: result?.bootSeconds ?? null,
      command: result?.commandSeconds ?? null,
    },
  });
}
