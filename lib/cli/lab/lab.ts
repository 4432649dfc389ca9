/**
 * `vfio-bridge lab` from request to verdict: the kernel and initramfs images provisioned under the
 * provisioning lock, then one guest at a time (the machine is small and shared, and TCG uses every
 * core it gets) under the guest lock, both in the cache directory unless VFIO_BRIDGE_LAB_LOCK names
 * the guest lock elsewhere (runs with caches of their own still take turns).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { UsageError } from '../errors';
import type { DeviceSpec } from './devices';
import {
  chooseKernel,
  hostKernel,
  KVM_MODULES,
  LAB_MODULES,
  pathKernel,
  type KernelChoice,
  type KernelNeeds,
  type KernelRequest,
} from './kernel';
import { builtKernel, cachedBuiltKernel, type BuiltKernel } from './kbuild';
import { layOut, type Layout } from './layout';
import { FileLock } from './lock';
import { hilEnvironment, keptPaths } from './machine';
import {
  buildInitramfs,
  debianKernel,
  ensureTools,
  initramfsPath,
  pruneCache,
  type InitramfsInputs,
} from './provision';
import { runGuest, type GuestResult } from './run';

/** The guest's init, shipped with the package (package.json `files`). */
export const LAB_INIT = path.join(__dirname, '..', '..', '..', 'scripts', 'lab', 'init.sh');

/** Everything a lab run is asked to do. */
export interface LabRequest {
  specs: DeviceSpec[];
  /** Modules the user names for the lab guest (--module). */
  modules: string[];
  /** The nested guest's /init (--vmm-init), and its modules. */
  vmmInit?: string;
  vmmModules: string[];
  kernel: KernelRequest;
  kvm: boolean;
  /** The project the guest must see, and where in it the command runs. */
  project: string;
  cwd: string;
  argv: string[];
  /** Variables for the command besides the lab's own. */
  env: Record<string, string>;
  /** The host's PATH. */
  hostPath: string;
  cache: string;
  append: string;
  /** The QEMU executable, and extra arguments for it. */
  qemuBinary: string;
  qemu: string[];
  memoryMiB: number;
  /** The lab guest's vCPUs. */
  cpus: number;
  timeoutSeconds: number;
  lockWaitSeconds: number;
  /** The file whose lock lets one guest run at a time. */
  guestLock: string;
  /** role to path: copies of backing files to keep. */
  keepFiles: Map<string, string>;
}

/** What the lab's kernel must have for `r`: the lab's modules, kvm's, the kernel drivers the devices stay on, the user's. */
export function labNeeds(r: Pick<LabRequest, 'specs' | 'modules' | 'vmmModules' | 'kvm'>): KernelNeeds {
  const drivers = r.specs.flatMap((s) => (s.driver !== undefined ? [s.driver] : []));
  return {
    modules: [...new Set([...LAB_MODULES, ...(r.kvm ? KVM_MODULES : []), ...drivers, ...r.modules])],
    vmmModules: r.vmmModules,
  };
}

/** The layout of `r`'s devices for a run directory. */
export function labLayout(r: Pick<LabRequest, 'specs'>, runDir: string): Layout {
  return layOut(r.specs, {
    runDir,
    fileSize: (file) => {
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (!st?.isFile())
        throw new UsageError(
          `file=${file}: no such file`,
          'name an existing file, or give size= for a new one',
        );
      return st.size;
    },
  });
}

/** The images a run boots. */
export interface Provisioned {
  kernel: KernelChoice;
  initramfs: string;
  vmmInitramfs: string | null;
  seconds: number;
}

/** An initramfs for `inputs`, from the cache or built now. */
function initramfs(
  cache: string,
  prefix: string,
  inputs: InitramfsInputs,
  kernel: KernelChoice,
  say: (l: string) => void,
): string {
  const out = initramfsPath(cache, prefix, inputs);
  if (fs.existsSync(out)) {
    const now = new Date();
    fs.utimesSync(out, now, now); // in use: not pruned
    return out;
  }
  say(`building the ${prefix === 'initramfs' ? '' : 'nested guest '}initramfs for ${kernel.tree.version}`);
  buildInitramfs(out, inputs, kernel.index, say);
  return out;
}

/**
 * provisionLab: QEMU and busybox present, the kernel chosen (and fetched if it is Debian's), the
 * initramfs images built or found in the cache.
 * @throws LabError ELABPROVISION (exit 3) when the host cannot provide them, ELABKERNEL when the
 * kernel lacks a module
 */
export async function provisionLab(
  r: LabRequest,
  say: (l: string) => void,
  signal?: AbortSignal,
): Promise<Provisioned> {
  const t0 = performance.now();
  fs.mkdirSync(r.cache, { recursive: true });
  // Before the provisioning lock: a cold build takes many minutes, under a lock of its own.
  const built: BuiltKernel | null =
    r.kernel.kind === 'built'
      ? await builtKernel({ cache: r.cache, say, ...(signal ? { signal } : {}) })
      : null;
  // Several checkouts may provision at once: one at a time, so none sees a half-written kernel.
  const { lock } = await FileLock.acquire(path.join(r.cache, 'provision.lock'), {
    waitSeconds: 900,
    what: 'another lab provisioning to finish',
    ...(signal ? { signal } : {}),
  });
  try {
    ensureTools(r.qemuBinary, say);
    const needs = labNeeds(r);
    const kernel = chooseKernel(r.kernel, needs, {
      host: () => hostKernel(),
      debian: (pkg) => debianKernel(r.cache, pkg, say),
      built: () => built!.tree,
      cachedBuilt: () => {
        const b = cachedBuiltKernel(r.cache);
        return typeof b === 'string' ? b : b.tree;
      },
      path: pathKernel,
    });
    say(`kernel ${kernel.reason}`);
    if (r.cpus > 1 && kernel.tree.source !== 'built')
      say(
        `${r.cpus} vCPUs on a kernel that may patch its own text as KVM VMs come and go: QEMU's ` +
          'multi-threaded TCG can then run stale text (an int3 Oops); --kernel built has no jump labels',
      );
    pruneCache(r.cache);
    const lab = initramfs(
      r.cache,
      'initramfs',
      { kernel: kernel.tree, modules: needs.modules, init: LAB_INIT },
      kernel,
      say,
    );
    const vmm =
      r.vmmInit === undefined
        ? null
        : initramfs(
            r.cache,
            'vmm-guest',
            { kernel: kernel.tree, modules: r.vmmModules, init: r.vmmInit },
            kernel,
            say,
          );
    return {
      kernel,
      initramfs: lab,
      vmmInitramfs: vmm,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    };
  } finally {
    lock.release();
  }
}

/** The variables the command sees: the devices' roles and files, the nested guest's images, the user's. */
export function labEnvironment(r: LabRequest, layout: Layout, p: Provisioned | null): Record<string, string> {
  return {
    ...hilEnvironment(layout),
    ...(p ? { VFIO_BRIDGE_VMM_KERNEL: p.kernel.tree.vmlinuz } : {}),
    // The guest kernel's modules, for a command that loads one itself (insmod; there is no depmod'd
    // /lib/modules in the host's root).
    ...(p?.kernel.tree.modulesDir ? { VFIO_BRIDGE_LAB_MODULES: p.kernel.tree.modulesDir } : {}),
    ...(p?.vmmInitramfs ? { VFIO_BRIDGE_VMM_INITRD: p.vmmInitramfs } : {}),
    VFIO_BRIDGE_LAB: '1',
    ...r.env,
  };
}

/** How a lab run went: the command's result, and how long it waited for another guest. */
export interface LabResult extends GuestResult {
  waitSeconds: number;
}

/** What a run reports as it goes. */
export interface LabHooks {
  say: (line: string) => void;
  console: (line: string) => void;
  signal?: AbortSignal;
}

/**
 * runLab: wait for the machine, boot the guest with `r`'s devices and run the command.
 * @throws LabError ELABLOCK when the wait runs out, else as runGuest
 */
export async function runLab(r: LabRequest, p: Provisioned, hooks: LabHooks): Promise<LabResult> {
  const { lock, waited } = await FileLock.acquire(r.guestLock, {
    waitSeconds: r.lockWaitSeconds,
    what: 'another lab guest',
    onWait: () => hooks.say('another lab guest is running; waiting for it'),
    ...(hooks.signal ? { signal: hooks.signal } : {}),
  });
  try {
    if (waited > 0) hooks.say(`waited ${Math.round(waited)} s for the other guest`);
    const result = await runGuest({
      cache: r.cache,
      layout: (runDir) => labLayout(r, runDir),
      machine: {
        qemu: r.qemuBinary,
        kernel: p.kernel.tree.vmlinuz,
        initramfs: p.initramfs,
        memoryMiB: r.memoryMiB,
        cpus: r.cpus,
        append: r.append,
        extra: r.qemu,
      },
      command: (layout) => ({
        argv: r.argv,
        cwd: r.cwd,
        env: labEnvironment(r, layout, p),
        path: r.hostPath,
      }),
      keep: (layout) => [
        ...keptPaths(layout, r.project),
        p.kernel.tree.vmlinuz,
        ...(p.kernel.tree.modulesDir ? [p.kernel.tree.modulesDir] : []),
        ...(p.vmmInitramfs ? [p.vmmInitramfs] : []),
      ],
      keepFiles: r.keepFiles,
      timeoutSeconds: r.timeoutSeconds,
      say: hooks.say,
      console: hooks.console,
      ...(hooks.signal ? { signal: hooks.signal } : {}),
    });
    return { ...result, waitSeconds: Math.round(waited * 10) / 10 };
  } finally {
    lock.release();
  }
}
