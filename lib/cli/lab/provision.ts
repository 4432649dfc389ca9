/**
 * What the lab needs on the host before a guest can boot, kept in a cache directory outside any
 * project: QEMU and a static busybox (installed with apt when missing and root), Debian's kernel
 * when the host's will not do (`apt-get download`, `dpkg -x`), and the initramfs images, keyed so
 * that a stale one is rebuilt: by the kernel, the module list, busybox and the init script.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { LabError, unprovisionable } from './errors';
import { unpackedKernel, type KernelTree } from './kernel';
import { readModule, type ModuleIndex } from './modules';

/** Debian's kernel series the lab falls back to (bookworm's backported 6.12). */
export const DEBIAN_KERNEL_RE = /^linux-image-(6\.12\.[0-9]+)\+deb12-amd64$/;
const APT_PACKAGES = ['qemu-system-x86', 'busybox-static'];
/** QEMU, unless VFIO_BRIDGE_LAB_QEMU names another. */
export const DEFAULT_QEMU = 'qemu-system-x86_64';
export const BUSYBOX = '/bin/busybox';

/** The cache directory: VFIO_BRIDGE_LAB_CACHE, else $XDG_CACHE_HOME/vfio-bridge/lab, else ~/.cache/vfio-bridge/lab. */
export function defaultCacheDir(env: NodeJS.ProcessEnv): string {
  if (env['VFIO_BRIDGE_LAB_CACHE']) return path.resolve(env['VFIO_BRIDGE_LAB_CACHE']);
  return path.join(env['XDG_CACHE_HOME'] || path.join(os.homedir(), '.cache'), 'vfio-bridge', 'lab');
}

/** Runs a provisioning tool; a failure is a LabError with the tool's last words. */
function tool(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; what: string },
): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error || r.status !== 0) {
    const said = (r.stderr ?? '').trim().split('\n').slice(-3).join(' / ');
    throw new LabError({
      message: `${opts.what} failed: ${r.error?.message ?? `${cmd} exited ${r.status}: ${said}`}`,
      code: (r.error as NodeJS.ErrnoException | undefined)?.code ?? 'ELABPROVISION',
      hint: 'the output above says why; a network or apt problem clears with a retry',
    });
  }
  return r;
}

const onPath = (cmd: string): boolean =>
  (process.env['PATH'] ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, cmd)));

/**
 * isStaticElf: whether `file` is an ELF64 executable without a program interpreter (PT_INTERP):
 * the initramfs has no libc, so its busybox must be static.
 */
export function isStaticElf(file: string): boolean {
  let b: Buffer;
  try {
    b = fs.readFileSync(file);
  } catch {
    return false;
  }
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const size = b.readUInt16LE(0x36);
  const count = b.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) {
    const at = phoff + i * size;
    if (at + 4 > b.length) return false;
    if (b.readUInt32LE(at) === 3) return false; // PT_INTERP: dynamically linked
  }
  return true;
}

/**
 * ensureTools: QEMU (`qemu`: a name on PATH, or a path) and a static busybox, installed with apt
 * when missing (as root).
 * @throws LabError ELABPROVISION (exit 3) when they are missing and cannot be installed here
 */
export function ensureTools(qemu: string, say: (line: string) => void): void {
  const hasQemu = (): boolean => (qemu.includes('/') ? fs.existsSync(qemu) : onPath(qemu));
  const have = (): boolean => hasQemu() && isStaticElf(BUSYBOX);
  if (have()) return;
  if (qemu !== DEFAULT_QEMU && !hasQemu())
    throw unprovisionable(
      `VFIO_BRIDGE_LAB_QEMU names ${qemu}, which is not there`,
      'name an installed qemu-system-x86_64, or unset it',
    );
  const fix = `sudo apt-get update && sudo apt-get install -y ${APT_PACKAGES.join(' ')}`;
  const why = `${qemu} or a static ${BUSYBOX} is missing`;
  if (!onPath('apt-get'))
    throw unprovisionable(
      `${why} and this host has no apt-get`,
      'install QEMU (x86_64 system emulator) and a static busybox',
    );
  if (process.getuid?.() !== 0) throw unprovisionable(`${why} and installing them needs root`, fix);
  say(`installing ${APT_PACKAGES.join(' ')}`);
  const install = (): SpawnSyncReturns<Buffer> =>
    spawnSync('apt-get', ['install', '-y', '-q', ...APT_PACKAGES], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  if (install().status !== 0) {
    tool('apt-get', ['update', '-q'], { what: 'apt-get update' });
    if (install().status !== 0)
      throw unprovisionable(`apt-get install ${APT_PACKAGES.join(' ')} failed`, fix);
  }
  if (!have()) throw unprovisionable(`${why} after apt-get install`, fix);
}

/** Compares Debian kernel package names by their version. */
function byVersion(a: string, b: string): number {
  const v = (s: string): number[] => (DEBIAN_KERNEL_RE.exec(s)?.[1] ?? '0').split('.').map(Number);
  const [x, y] = [v(a), v(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++)
    if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

/** The newest Debian 6.12 kernel package apt knows, or undefined (no lists yet, no apt). */
function newestKernelPackage(): string | undefined {
  const r = spawnSync('apt-cache', ['pkgnames', 'linux-image-6.12.'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return undefined;
  return r.stdout
    .split('\n')
    .filter((n) => DEBIAN_KERNEL_RE.test(n))
    .sort(byVersion)
    .at(-1);
}

const complete = (dir: string): string => path.join(dir, '.complete');
const mtime = (p: string): number => fs.statSync(p, { throwIfNoEntry: false })?.mtimeMs ?? -1;

/** The unpacked packages in the cache, newest first. */
function cachedPackages(cache: string): string[] {
  return fs
    .readdirSync(cache)
    .filter((n) => DEBIAN_KERNEL_RE.test(n) && fs.existsSync(complete(path.join(cache, n))))
    .sort(byVersion)
    .reverse();
}

/**
 * debianKernel: Debian's kernel package `pkg` (default: the newest 6.12 apt knows), downloaded
 * and unpacked in the cache once. When apt's lists have not changed since the newest cached one
 * was unpacked, that one is taken without asking apt; offline, any cached one will do.
 * @throws LabError ELABPROVISION (exit 3) when no package is known or cached
 */
export function debianKernel(
  cache: string,
  pkg: string | undefined,
  say: (line: string) => void,
): KernelTree {
  let name = pkg;
  if (name === undefined) {
    const cached = cachedPackages(cache)[0];
    const lists = '/var/lib/apt/lists';
    if (cached !== undefined && mtime(lists) <= mtime(complete(path.join(cache, cached)))) name = cached;
  }
  if (name === undefined && onPath('apt-cache')) {
    name = newestKernelPackage();
    if (name === undefined && process.getuid?.() === 0) {
      tool('apt-get', ['update', '-q'], { what: 'apt-get update' });
      name = newestKernelPackage();
    }
  }
  name ??= cachedPackages(cache)[0];
  if (name === undefined) {
    throw unprovisionable(
      onPath('apt-get')
        ? 'apt knows no package linux-image-6.12.*+deb12-amd64'
        : "the host's kernel will not do and this host has no apt to fetch Debian's",
      onPath('apt-get')
        ? 'sudo apt-get update'
        : 'give a kernel with the IOMMU, vfio-pci and 9p: --kernel PATH',
    );
  }
  const dir = path.join(cache, name);
  if (!fs.existsSync(complete(dir))) {
    say(`downloading ${name}`);
    const download = path.join(cache, 'download');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(download, { recursive: true, force: true });
    fs.mkdirSync(download);
    tool('apt-get', ['download', '-q', name], { cwd: download, what: `apt-get download ${name}` });
    const deb = fs.readdirSync(download).find((f) => f.endsWith('.deb'));
    if (deb === undefined)
      throw new LabError({ message: `apt-get download ${name} left no .deb`, code: 'ELABPROVISION' });
    tool('dpkg', ['-x', path.join(download, deb), dir], { what: `dpkg -x ${deb}` });
    fs.rmSync(download, { recursive: true, force: true });
    fs.writeFileSync(complete(dir), '');
    // A newer kernel replaces the older ones (about 110 MiB each) unless one was pinned.
    if (pkg === undefined) {
      for (const old of cachedPackages(cache))
        if (old !== name) fs.rmSync(path.join(cache, old), { recursive: true, force: true });
    }
  }
  const tree = unpackedKernel(dir, 'debian', name);
  if (typeof tree === 'string')
    throw new LabError({ message: `the package ${name}: ${tree}`, code: 'ELABPROVISION' });
  return tree;
}

/** A file of a newc (SVR4, no CRC) cpio archive, the format the kernel unpacks as an initramfs. */
export interface CpioEntry {
  name: string;
  /** File contents; a directory when absent. */
  data?: Buffer;
  /** Permission bits (default 0755 for directories and executables, 0644 otherwise). */
  mode?: number;
}

/** newcArchive: `entries` as a newc cpio archive, ending with its trailer. */
export function newcArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  const pad = (): void => {
    const n = (4 - (size % 4)) % 4;
    if (n > 0) {
      parts.push(Buffer.alloc(n));
      size += n;
    }
  };
  const put = (b: Buffer): void => {
    parts.push(b);
    size += b.length;
  };
  const all = [...entries, { name: 'TRAILER!!!', data: Buffer.alloc(0), mode: 0 }];
  all.forEach((e, i) => {
    const dir = e.data === undefined;
    const mode = (dir ? 0o040000 : 0o100000) | (e.mode ?? (dir ? 0o755 : 0o644));
    const data = e.data ?? Buffer.alloc(0);
    const fields = [
      i + 1,
      e.name === 'TRAILER!!!' ? 0 : mode,
      0,
      0,
      dir ? 2 : 1,
      0,
      data.length,
      0,
      0,
      0,
      0,
      e.name.length + 1,
      0,
    ];
    put(Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'latin1'));
    put(Buffer.from(`${e.name}\0`, 'latin1'));
    pad();
    put(data);
    pad();
  });
  return Buffer.concat(parts, size);
}

/** The inputs of an initramfs: a kernel, its modules and an init script. */
export interface InitramfsInputs {
  kernel: KernelTree;
  /** The modules, by name as asked for (dependencies are added at build time). */
  modules: readonly string[];
  init: string;
  /** The static busybox (default /bin/busybox). */
  busybox?: string;
}

/** How an initramfs is put together: part of its cache key (2: soft dependencies are loaded too). */
const INITRAMFS_RECIPE = 2;

/**
 * initramfsPath: where the initramfs for `inputs` is cached: `PREFIX-VERSION-KEY.cpio`, the key a
 * hash of the recipe, the kernel (its image's path, size and time), the module names, busybox and the
 * init.
 */
export function initramfsPath(cache: string, prefix: string, inputs: InitramfsInputs): string {
  const img = fs.statSync(inputs.kernel.vmlinuz);
  const h = createHash('sha256');
  h.update(`${INITRAMFS_RECIPE}\0${inputs.kernel.vmlinuz}\0${img.size}\0${img.mtimeMs}\0`);
  h.update(`${inputs.modules.join(',')}\0`);
  h.update(fs.readFileSync(inputs.busybox ?? BUSYBOX));
  h.update(fs.readFileSync(inputs.init));
  return path.join(cache, `${prefix}-${inputs.kernel.version}-${h.digest('hex').slice(0, 16)}.cpio`);
}

/**
 * buildInitramfs: an initramfs at `out` holding the static busybox, `init` as /init, and the
 * modules with their dependencies, decompressed in /modules and listed in load order in
 * /modules.list.
 * @throws LabError ELABKERNEL when the kernel lacks one of the modules
 */
export function buildInitramfs(
  out: string,
  inputs: InitramfsInputs,
  index: ModuleIndex | null,
  say: (line: string) => void = () => {},
): string[] {
  const { order, missing, softMissing } =
    index === null
      ? { order: [], missing: [...inputs.modules], softMissing: [] }
      : index.loadOrder(inputs.modules);
  if (missing.length > 0) {
    throw new LabError({
      message: `the kernel ${inputs.kernel.version} has no module ${missing.join(', ')}`,
      code: 'ELABKERNEL',
      hint: 'check the names given with --module and --vmm-module (as in lsmod), or pick another --kernel',
    });
  }
  const entries: CpioEntry[] = [
    { name: 'bin' },
    { name: 'bin/busybox', data: fs.readFileSync(inputs.busybox ?? BUSYBOX), mode: 0o755 },
    { name: 'init', data: fs.readFileSync(inputs.init), mode: 0o755 },
    { name: 'modules' },
    ...order.map((m) => ({ name: `modules/${m}.ko`, data: readModule(index!.file(m)!) })),
    { name: 'modules.list', data: Buffer.from(order.map((m) => `${m}\n`).join('')) },
  ];
  if (softMissing.length > 0)
    say(`soft dependencies the kernel does not have, left out as modprobe would: ${softMissing.join(', ')}`);
  fs.writeFileSync(`${out}.tmp`, newcArchive(entries));
  fs.renameSync(`${out}.tmp`, out);
  return order;
}

/** Removes entries of the cache nobody has used for a day: initramfs images and killed runs' directories. */
export function pruneCache(cache: string): void {
  const dayAgo = Date.now() - 24 * 3600 * 1000;
  for (const name of fs.readdirSync(cache)) {
    if (!/^(initramfs-.*\.cpio|vmm-guest-.*\.cpio|run\..*)$/.test(name)) continue;
    const p = path.join(cache, name);
    if (mtime(p) < dayAgo) fs.rmSync(p, { recursive: true, force: true });
  }
}
