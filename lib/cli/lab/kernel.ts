/**
 * Which kernel the lab guest boots. The lab's own kernel when one is built and cached (kbuild.ts:
 * Debian's 6.12 source with IOMMUFD, VFIO device cdevs and mdev), else the host's own kernel when
 * it has what the lab needs (it is already on disk, and its modules match it), else Debian's 6.12
 * package (provision.ts fetches it), or a kernel the user names (`built` builds the lab's own). What the lab needs: the Intel IOMMU with interrupt remapping
 * built in (vfio_iommu_type1 refuses a group without it), vfio-pci, virtio-pci and 9p (the guest's
 * root is the host's, over 9p), kvm-amd for nested guests unless told otherwise, and whatever
 * modules the user names.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { UsageError } from '../errors';
import { LabError, unprovisionable } from './errors';
import { ModuleIndex } from './modules';

/** The modules the lab guest loads for itself, by name (their dependencies follow). */
export const LAB_MODULES: readonly string[] = [
  'virtio_pci',
  'vfio-pci',
  'vfio_iommu_type1',
  '9pnet_virtio',
  '9p',
];
/** What gives the lab guest /dev/kvm: TCG emulates AMD's SVM, so kvm-amd. */
export const KVM_MODULES: readonly string[] = ['kvm-amd'];
/** Built-in options the lab cannot do without (they cannot be modules). */
export const LAB_CONFIG: readonly string[] = ['CONFIG_INTEL_IOMMU', 'CONFIG_IRQ_REMAP'];

/** A kernel the lab can boot: its image, its modules and its build config. */
export interface KernelTree {
  /** Where it comes from: the host's own, a Debian package, the lab's own build, or a path the user gave. */
  source: 'host' | 'debian' | 'built' | 'path';
  /** The Debian package: for source `debian` the image's, for `built` the source's. */
  package?: string;
  version: string;
  vmlinuz: string;
  /** lib/modules/VERSION, or null when there is none. */
  modulesDir: string | null;
  /** The kernel's build config (`CONFIG_X` to `y`, `m`, ...), or null when none was found. */
  config: ReadonlyMap<string, string> | null;
}

/** What `--kernel` asks for. */
export type KernelRequest =
  | { kind: 'auto' }
  | { kind: 'host' }
  | { kind: 'debian'; package?: string }
  | { kind: 'built' }
  | { kind: 'path'; path: string; modules?: string };

/**
 * parseKernelRequest: `auto`, `host`, `debian`, `built` (the lab's own, built when missing), a
 * Debian package (`linux-image-...`), or a path (a vmlinuz file, or a directory holding
 * boot/vmlinuz-* and lib/modules/*, as a package unpacks).
 */
export function parseKernelRequest(text: string, modules?: string): KernelRequest {
  const t = text.trim();
  if (
    modules !== undefined &&
    (t === 'auto' || t === 'host' || t === 'debian' || t === 'built' || t.startsWith('linux-image-'))
  ) {
    throw new UsageError(
      `--modules goes with a kernel given by path, not --kernel ${t}`,
      'name the kernel file with --kernel PATH',
    );
  }
  if (t === 'auto' || t === 'host' || t === 'built') return { kind: t };
  if (t === 'debian') return { kind: 'debian' };
  if (/^linux-image-[A-Za-z0-9.+~-]+$/.test(t)) return { kind: 'debian', package: t };
  if (t === '' || !(t.includes('/') || t.startsWith('.'))) {
    throw new UsageError(
      `--kernel ${JSON.stringify(text)} is not a kernel`,
      'give auto, host, debian, built, a Debian package (linux-image-6.12.57+deb12-amd64) or a path (./bzImage)',
    );
  }
  return {
    kind: 'path',
    path: path.resolve(t),
    ...(modules !== undefined ? { modules: path.resolve(modules) } : {}),
  };
}

/** A kernel build config's `CONFIG_X=value` lines. */
export function parseConfig(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^(CONFIG_[A-Za-z0-9_]+)=(.*)$/gm)) out.set(m[1], m[2]);
  return out;
}

function readConfig(files: readonly string[]): Map<string, string> | null {
  for (const f of files) {
    try {
      const raw = fs.readFileSync(f);
      return parseConfig((f.endsWith('.gz') ? zlib.gunzipSync(raw) : raw).toString('utf8'));
    } catch {
      // The next place, if any.
    }
  }
  return null;
}

const isFile = (p: string): boolean => fs.statSync(p, { throwIfNoEntry: false })?.isFile() === true;
const isDir = (p: string): boolean => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() === true;

/** Where to look for the host's kernel: a root (a fake one in tests) and the running release. */
export interface HostProbe {
  root?: string;
  release?: string;
}

/**
 * hostKernel: the running kernel's image, modules and config, or why it cannot be used (the
 * image is missing or unreadable, there are no modules).
 */
export function hostKernel(probe: HostProbe = {}): KernelTree | string {
  const root = probe.root ?? '/';
  const release = probe.release ?? os.release();
  const modulesDir = path.join(root, 'lib/modules', release);
  // Fedora keeps the image beside the modules; Debian, Ubuntu and Arch-style installs in /boot.
  const images = [path.join(root, 'boot', `vmlinuz-${release}`), path.join(modulesDir, 'vmlinuz')];
  const vmlinuz = images.find(isFile);
  const host = `the host's kernel ${release}`;
  if (vmlinuz === undefined) return `${host} has no image at ${images.join(' or ')}`;
  try {
    fs.accessSync(vmlinuz, fs.constants.R_OK);
  } catch {
    return `${host}: its image ${vmlinuz} is not readable (some distributions keep it for root alone)`;
  }
  if (!isDir(modulesDir)) return `${host} has no modules directory ${modulesDir}`;
  const running = root === '/' && release === os.release() ? ['/proc/config.gz'] : [];
  const config = readConfig([
    path.join(root, 'boot', `config-${release}`),
    path.join(modulesDir, 'config'),
    ...running,
  ]);
  return { source: 'host', version: release, vmlinuz, modulesDir, config };
}

/** A kernel unpacked as a Debian package is (boot/vmlinuz-V, boot/config-V, lib/modules/V). */
export function unpackedKernel(
  dir: string,
  source: 'debian' | 'built' | 'path',
  pkg?: string,
): KernelTree | string {
  const boot = path.join(dir, 'boot');
  const image = isDir(boot) ? fs.readdirSync(boot).find((f) => f.startsWith('vmlinuz-')) : undefined;
  if (image === undefined) return `${dir} has no boot/vmlinuz-*`;
  const version = image.slice('vmlinuz-'.length);
  const modulesDir = path.join(dir, 'lib/modules', version);
  return {
    source,
    ...(pkg !== undefined ? { package: pkg } : {}),
    version,
    vmlinuz: path.join(boot, image),
    modulesDir: isDir(modulesDir) ? modulesDir : null,
    config: readConfig([path.join(boot, `config-${version}`)]),
  };
}

/**
 * pathKernel: a kernel the user names: a directory laid out as a package unpacks, or an image
 * whose modules are in `modules` (default /lib/modules/VERSION, the version from the file name).
 */
export function pathKernel(req: { path: string; modules?: string }): KernelTree {
  if (isDir(req.path)) {
    const t = unpackedKernel(req.path, 'path');
    if (typeof t === 'string')
      throw new UsageError(
        `--kernel ${req.path}: ${t}`,
        'give a vmlinuz file, or a directory with boot/ and lib/modules/',
      );
    return t;
  }
  if (!isFile(req.path))
    throw new UsageError(
      `--kernel ${req.path}: no such file or directory`,
      'give the path of a bzImage or vmlinuz',
    );
  const version = /^vmlinuz-(.+)$/.exec(path.basename(req.path))?.[1] ?? path.basename(req.path);
  const modulesDir = req.modules ?? path.join('/lib/modules', version);
  if (req.modules !== undefined && !isDir(req.modules))
    throw new UsageError(
      `--modules ${req.modules}: no such directory`,
      'give the lib/modules/VERSION directory of that kernel',
    );
  return {
    source: 'path',
    version,
    vmlinuz: req.path,
    modulesDir: isDir(modulesDir) ? modulesDir : null,
    config: readConfig([
      path.join(path.dirname(req.path), `config-${version}`),
      path.join(modulesDir, 'config'),
    ]),
  };
}

/** What the lab guest and the nested guest need of the kernel. */
export interface KernelNeeds {
  /** Modules the lab guest loads (the lab's own, kvm's, those of devices left on a driver, the user's). */
  modules: readonly string[];
  /** Modules of the nested guest's initramfs (--vmm-module). */
  vmmModules: readonly string[];
}

/** What `tree` lacks of `needs`, one phrase each; empty when it has everything. */
export function missingFeatures(tree: KernelTree, needs: KernelNeeds, index: ModuleIndex | null): string[] {
  const out: string[] = [];
  for (const c of LAB_CONFIG) {
    const v = tree.config?.get(c);
    if (tree.config === null) {
      out.push(`no build config to show ${c}=y`);
      break;
    }
    if (v !== 'y') out.push(`${c}=${v ?? 'unset'} (the lab needs it built in)`);
  }
  if (index === null) {
    if (needs.modules.length + needs.vmmModules.length > 0) out.push('no modules directory');
    return out;
  }
  const missing = [...new Set([...needs.modules, ...needs.vmmModules])].filter((m) => !index.has(m));
  if (missing.length > 0) out.push(`no module ${missing.join(', ')}`);
  return out;
}

/** The kernel chosen, its module index, and why, as the lab prints it. */
export interface KernelChoice {
  tree: KernelTree;
  index: ModuleIndex | null;
  /** One line: which kernel, from where, and why that one. */
  reason: string;
}

/** Where {@link chooseKernel} gets each kind of kernel (provision.ts and kbuild.ts in the lab, fakes in tests). */
export interface KernelSources {
  host(): KernelTree | string;
  debian(pkg: string | undefined): KernelTree;
  /** The lab's own kernel, built if it was missing (only asked for `built`). */
  built(): KernelTree;
  /** The lab's own kernel if one is built and cached, else why not (asked by `auto`; builds nothing). */
  cachedBuilt(): KernelTree | string;
  path(req: { path: string; modules?: string }): KernelTree;
}

const indexOf = (t: KernelTree): ModuleIndex | null =>
  t.modulesDir === null ? null : ModuleIndex.load(t.modulesDir);
const kernelLabel = (t: KernelTree): string =>
  t.source === 'debian'
    ? `${t.version} from the Debian package ${t.package}`
    : t.source === 'built'
      ? `${t.version}, the lab's own build of ${t.package ?? 'the kernel source'} (${t.vmlinuz})`
      : `${t.version} (${t.vmlinuz})`;

/**
 * chooseKernel: the kernel for `req`. `auto` takes the lab's own kernel when one is built and has
 * all of `needs`, else the host's when it has them, else Debian's; `host`, `debian`, `built` and a
 * path take that one or fail saying what it lacks.
 * @throws LabError ELABPROVISION (exit 3) when the host's kernel is asked for and cannot serve;
 * ELABKERNEL when the kernel asked for lacks what the lab or the user needs
 */
export function chooseKernel(req: KernelRequest, needs: KernelNeeds, sources: KernelSources): KernelChoice {
  const lacking = (t: KernelTree, index: ModuleIndex | null): LabError =>
    new LabError({
      message: `the kernel ${kernelLabel(t)} lacks what the lab needs: ${missingFeatures(t, needs, index).join('; ')}`,
      code: 'ELABKERNEL',
      hint:
        t.source === 'debian'
          ? 'check the module names given with --module and --vmm-module'
          : t.source === 'built'
            ? 'add what is missing to scripts/lab/kernel/lab.config, or use --kernel debian'
            : 'use --kernel debian, or a kernel built with what is missing',
    });
  if (req.kind === 'auto' || req.kind === 'host') {
    const whys: string[] = [];
    if (req.kind === 'auto') {
      const built = sources.cachedBuilt();
      if (typeof built === 'string') whys.push(built);
      else {
        const index = indexOf(built);
        const missing = missingFeatures(built, needs, index);
        if (missing.length === 0) return { tree: built, index, reason: `${kernelLabel(built)}, cached` };
        whys.push(`the lab's own kernel ${built.version} will not do: ${missing.join('; ')}`);
      }
    }
    const host = sources.host();
    if (typeof host === 'string') whys.push(host);
    else {
      const index = indexOf(host);
      const missing = missingFeatures(host, needs, index);
      if (missing.length === 0)
        return {
          tree: host,
          index,
          reason: `the host's kernel ${kernelLabel(host)}${whys.length > 0 ? `, since ${whys.join('; ')}` : ''}`,
        };
      if (req.kind === 'host') throw lacking(host, index);
      whys.push(`the host's kernel ${host.version} will not do: ${missing.join('; ')}`);
    }
    if (req.kind === 'host') throw unprovisionable(whys.join('; '), 'use --kernel debian, or --kernel PATH');
    const deb = sources.debian(undefined);
    const index = indexOf(deb);
    if (missingFeatures(deb, needs, index).length > 0) throw lacking(deb, index);
    return { tree: deb, index, reason: `${kernelLabel(deb)}, since ${whys.join('; ')}` };
  }
  const tree =
    req.kind === 'debian'
      ? sources.debian(req.package)
      : req.kind === 'built'
        ? sources.built()
        : sources.path(req);
  const index = indexOf(tree);
  const missing = missingFeatures(tree, needs, index);
  // A kernel of the user's own without a config or modules may well have everything built in.
  const unknowable =
    tree.source === 'path' &&
    missing.every((m) => m.startsWith('no build config') || m === 'no modules directory');
  if (missing.length > 0 && !unknowable) throw lacking(tree, index);
  const note = missing.length > 0 ? ` (unchecked: ${missing.join('; ')}; taken to be built in)` : '';
  return { tree, index, reason: `${kernelLabel(tree)}, as asked${note}` };
}
