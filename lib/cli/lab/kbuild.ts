/**
 * The lab's own kernel (`--kernel built`): Debian's linux-source-6.12 package, configured from a
 * small base (tinyconfig) and the fragment scripts/lab/kernel/lab.config, checked (every setting
 * of the fragment must survive olddefconfig), built with -j$(nproc) and installed in the cache as a
 * package unpacks (boot/vmlinuz-R, boot/config-R, lib/modules/R), so that the lab takes it like
 * Debian's. A built kernel is cached under a key of the source version, the base, the fragment's
 * settings and the recipe's version ({@link buildKey}): warm, nothing is built. The object tree of
 * a source version is kept, so a changed fragment rebuilds only what it changes.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { LabError, unprovisionable } from './errors';
import {
  checkConfig,
  configValues,
  explainMismatches,
  mergeFragment,
  parseFragment,
  buildKey,
} from './kconfig';
import type { FragmentEntry } from './kconfig';
import { childCpuSeconds, ensureBuildTools, runStep, tail, type Step } from './kbuild-tools';
import { unpackedKernel, type KernelTree } from './kernel';
import { FileLock } from './lock';

/** The fragment, shipped with the package (package.json `files`). */
export const KERNEL_FRAGMENT = path.join(
  __dirname,
  '..',
  '..',
  '..',
  'scripts',
  'lab',
  'kernel',
  'lab.config',
);
/** The base config the fragment goes on: measured faster to build than a trimmed defconfig. */
export const KERNEL_BASE = 'tinyconfig';
/** The recipe's version: bump it whenever a change here changes what a build makes. */
export const KERNEL_RECIPE = 1;
/** Debian's source package of the 6.12 series (bookworm's backports and security updates). */
export const SOURCE_PACKAGE = 'linux-source-6.12';
const BUILT_PREFIX = 'linux-built-';
/** Built kernels kept besides the newest (different fragments, e.g. of other branches). */
const KEEP_BUILT = 3;

/** What a built kernel's build.json records. */
export interface BuildRecord {
  key: string;
  sourceVersion: string;
  base: string;
  recipe: number;
  release: string;
  /** Wall-clock seconds of the build, from configuring to installing (not the download). */
  seconds: number;
  /** CPU seconds the build's processes used: on an idle machine, about seconds × jobs. */
  cpuSeconds: number;
  /** Seconds of the source's download and unpacking, or 0 when it was cached. */
  sourceSeconds: number;
  jobs: number;
  /** ISO time the build ended. */
  at: string;
}

/** A kernel the lab built, with its record. */
export interface BuiltKernel {
  tree: KernelTree;
  record: BuildRecord;
  dir: string;
}

const complete = (dir: string): string => path.join(dir, '.complete');
const mtime = (p: string): number => fs.statSync(p, { throwIfNoEntry: false })?.mtimeMs ?? -1;

/** The fragment's settings. @throws LabError EKCONFIG for a malformed fragment */
export function readFragment(file: string = KERNEL_FRAGMENT): FragmentEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new LabError({
      message: `cannot read the lab kernel's fragment ${file}: ${(e as Error).message}`,
      code: (e as NodeJS.ErrnoException).code ?? 'EIO',
      cause: e,
    });
  }
  return parseFragment(text, file);
}

/** The built kernels in `cache` whose key matches the fragment, newest source first. */
export function cachedBuilds(cache: string, entries: readonly FragmentEntry[]): BuiltKernel[] {
  const names = fs.existsSync(cache) ? fs.readdirSync(cache).filter((n) => n.startsWith(BUILT_PREFIX)) : [];
  const out: BuiltKernel[] = [];
  for (const n of names) {
    const dir = path.join(cache, n);
    if (!fs.existsSync(complete(dir))) continue;
    let record: BuildRecord;
    try {
      record = JSON.parse(fs.readFileSync(path.join(dir, 'build.json'), 'utf8')) as BuildRecord;
    } catch {
      continue;
    }
    const key = buildKey({
      sourceVersion: record.sourceVersion,
      base: KERNEL_BASE,
      entries,
      recipe: KERNEL_RECIPE,
    });
    if (record.key !== key || record.base !== KERNEL_BASE || record.recipe !== KERNEL_RECIPE) continue;
    const tree = unpackedKernel(dir, 'built');
    if (typeof tree !== 'string') out.push({ tree: { ...tree, package: SOURCE_PACKAGE }, record, dir });
  }
  return out.sort((a, b) => compareDebianVersions(b.record.sourceVersion, a.record.sourceVersion));
}

/** Orders Debian versions as far as the lab needs: numbers compared as numbers, `~` before anything. */
export function compareDebianVersions(a: string, b: string): number {
  const parts = (v: string): string[] => v.match(/[0-9]+|~|[^0-9~]+/g) ?? [];
  const [x, y] = [parts(a), parts(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const [p, q] = [x[i], y[i]];
    if (p === q) continue;
    if (p === undefined) return q === '~' ? 1 : -1;
    if (q === undefined) return p === '~' ? -1 : 1;
    if (p === '~' || q === '~') return p === '~' ? -1 : 1;
    const [np, nq] = [Number(p), Number(q)];
    if (!Number.isNaN(np) && !Number.isNaN(nq)) return np - nq;
    return p < q ? -1 : 1;
  }
  return 0;
}

/**
 * cachedBuiltKernel: the newest built kernel of the current fragment in `cache`, or why there is
 * none. Asks nothing of apt: `auto` takes what is there.
 */
export function cachedBuiltKernel(cache: string, fragment: string = KERNEL_FRAGMENT): BuiltKernel | string {
  const found = cachedBuilds(cache, readFragment(fragment))[0];
  return (
    found ?? `no lab kernel is built for ${path.basename(fragment)} in ${cache} (--kernel built builds one)`
  );
}

/** The version of the source package apt would download, or undefined when apt cannot say. */
function candidateVersion(): string | undefined {
  const ask = (): string | undefined => {
    const r = spawnSync('apt-cache', ['policy', SOURCE_PACKAGE], { encoding: 'utf8' });
    const v = r.status === 0 ? /Candidate:\s*(\S+)/.exec(r.stdout)?.[1] : undefined;
    return v === undefined || v === '(none)' ? undefined : v;
  };
  let v = ask();
  if (v === undefined && process.getuid?.() === 0) {
    spawnSync('apt-get', ['update', '-q'], { stdio: ['ignore', 'ignore', 'inherit'] });
    v = ask();
  }
  return v;
}

/** What a build is told. */
export interface BuildOptions {
  cache: string;
  say: (line: string) => void;
  signal?: AbortSignal;
  /** The fragment (default: the package's). */
  fragment?: string;
  /** Parallel jobs (default: the CPUs this process may use). */
  jobs?: number;
}

/**
 * builtKernel: the lab's own kernel for the current fragment, built now when the cache has none
 * for the source version apt offers (or, when apt's lists have not changed since the last build,
 * or apt cannot say, the newest one cached).
 * @throws LabError ELABPROVISION (exit 3) when the source or the build tools cannot be had,
 * EKCONFIG when the config lacks a setting of the fragment, EKBUILD when the build fails
 */
export async function builtKernel(o: BuildOptions): Promise<BuiltKernel> {
  const fragment = o.fragment ?? KERNEL_FRAGMENT;
  const entries = readFragment(fragment);
  const cached = cachedBuilds(o.cache, entries)[0];
  if (cached && mtime('/var/lib/apt/lists') <= mtime(complete(cached.dir))) return cached;
  const version = candidateVersion() ?? cached?.record.sourceVersion;
  if (version === undefined)
    throw unprovisionable(
      `apt knows no package ${SOURCE_PACKAGE} to build the lab's kernel from`,
      'sudo apt-get update (bookworm-security or bookworm-backports has it), or use --kernel debian',
    );
  const key = buildKey({ sourceVersion: version, base: KERNEL_BASE, entries, recipe: KERNEL_RECIPE });
  const found = (): BuiltKernel | undefined =>
    cachedBuilds(o.cache, entries).find((b) => b.record.key === key);
  const hit = found();
  if (hit) return hit;
  ensureBuildTools(o.say);
  fs.mkdirSync(o.cache, { recursive: true });
  const { lock } = await FileLock.acquire(path.join(o.cache, 'kernel-build.lock'), {
    waitSeconds: 3600,
    what: 'another build of the lab kernel',
    onWait: () => o.say('another build of the lab kernel is running; waiting for it'),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  try {
    return found() ?? (await build({ ...o, fragment }, entries, version, key));
  } finally {
    lock.release();
  }
}

/** The source tree of `version`, downloaded and unpacked in the cache once. */
async function source(
  o: BuildOptions,
  version: string,
  log: string,
): Promise<{ dir: string; seconds: number }> {
  const dir = path.join(o.cache, `linux-source-${version}`);
  if (fs.existsSync(complete(dir))) return { dir, seconds: 0 };
  const t0 = performance.now();
  o.say(`downloading and unpacking ${SOURCE_PACKAGE} ${version} (about 150 MB)`);
  const dl = path.join(o.cache, 'source-download');
  fs.rmSync(dl, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dl);
  fs.mkdirSync(dir);
  const hooks = { log, ...(o.signal ? { signal: o.signal } : {}) };
  await runStep(
    {
      cmd: 'apt-get',
      args: ['download', '-q', `${SOURCE_PACKAGE}=${version}`],
      cwd: dl,
      what: 'apt-get download',
    },
    hooks,
  );
  const deb = fs.readdirSync(dl).find((f) => f.endsWith('.deb'));
  if (deb === undefined)
    throw new LabError({ message: `apt-get download ${SOURCE_PACKAGE} left no .deb`, code: 'ELABPROVISION' });
  await runStep({ cmd: 'dpkg-deb', args: ['-x', deb, 'x'], cwd: dl, what: `unpacking ${deb}` }, hooks);
  const tarball = path.join(dl, 'x', 'usr', 'src', `${SOURCE_PACKAGE}.tar.xz`);
  await runStep(
    { cmd: 'tar', args: ['-xf', tarball, '-C', dir, '--strip-components=1'], what: 'unpacking the source' },
    hooks,
  );
  fs.rmSync(dl, { recursive: true, force: true });
  fs.writeFileSync(complete(dir), '');
  return { dir, seconds: (performance.now() - t0) / 1000 };
}

/** Configures, checks, builds and installs; returns the installed kernel. */
async function build(
  o: BuildOptions & { fragment: string },
  entries: readonly FragmentEntry[],
  version: string,
  key: string,
): Promise<BuiltKernel> {
  const log = path.join(o.cache, 'kernel-build.log');
  fs.writeFileSync(
    log,
    `lab kernel build ${key}: ${SOURCE_PACKAGE} ${version}, ${KERNEL_BASE} + ${o.fragment}\n`,
  );
  const src = await source(o, version, log);
  const t0 = performance.now();
  const cpu0 = childCpuSeconds();
  const jobs = o.jobs ?? os.availableParallelism();
  const obj = path.join(o.cache, `linux-obj-${version}`);
  fs.mkdirSync(obj, { recursive: true });
  const hooks = { log, ...(o.signal ? { signal: o.signal } : {}) };
  const make = (what: string, ...args: string[]): Step => ({
    cmd: 'make',
    args: ['-C', src.dir, `O=${obj}`, 'ARCH=x86_64', ...args],
    what,
  });
  o.say(`configuring the lab kernel: ${KERNEL_BASE} + ${path.basename(o.fragment)} (log ${log})`);
  await runStep(make(`make ${KERNEL_BASE}`, KERNEL_BASE), hooks);
  const dotConfig = path.join(obj, '.config');
  fs.writeFileSync(dotConfig, mergeFragment(fs.readFileSync(dotConfig, 'utf8'), entries));
  await runStep(make('make olddefconfig', 'olddefconfig'), hooks);
  const config = configValues(fs.readFileSync(dotConfig, 'utf8'));
  const mismatches = checkConfig(entries, config);
  if (mismatches.length > 0) {
    const lines = explainMismatches(mismatches, config, src.dir);
    throw new LabError({
      message:
        `the lab kernel's config does not have ${mismatches.length} setting${mismatches.length > 1 ? 's' : ''} ` +
        `of ${o.fragment} (Kconfig dropped them):\n${lines.map((l) => `  ${l}`).join('\n')}`,
      code: 'EKCONFIG',
      hint: `add what they depend on to ${path.basename(o.fragment)} (the config is ${dotConfig})`,
    });
  }
  o.say(`building the lab kernel with ${jobs} jobs (cold: about 15 min on 2 CPUs)`);
  const progress = {
    everyMs: 60_000,
    report: (s: number, last: string) => o.say(`kernel build: ${Math.round(s / 60)} min, at ${last.trim()}`),
  };
  await runStep(make('the kernel build', `-j${jobs}`, 'bzImage', 'modules'), { ...hooks, progress });
  const release = spawnSync('make', ['-s', '-C', src.dir, `O=${obj}`, 'ARCH=x86_64', 'kernelrelease'], {
    encoding: 'utf8',
  }).stdout.trim();
  if (!/^[0-9][A-Za-z0-9.+_~-]*$/.test(release))
    throw new LabError({
      message: `make kernelrelease said ${JSON.stringify(release)}`,
      code: 'EKBUILD',
      hint: `see ${log}`,
    });
  const dir = path.join(o.cache, `${BUILT_PREFIX}${release}-${key}`);
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.join(tmp, 'boot'), { recursive: true });
  await runStep(make('make modules_install', `INSTALL_MOD_PATH=${tmp}`, 'modules_install'), hooks);
  fs.rmSync(path.join(tmp, 'lib', 'modules', release, 'build'), { force: true });
  fs.copyFileSync(
    path.join(obj, 'arch', 'x86', 'boot', 'bzImage'),
    path.join(tmp, 'boot', `vmlinuz-${release}`),
  );
  fs.copyFileSync(dotConfig, path.join(tmp, 'boot', `config-${release}`));
  fs.copyFileSync(path.join(obj, 'System.map'), path.join(tmp, 'boot', `System.map-${release}`));
  const record: BuildRecord = {
    key,
    sourceVersion: version,
    base: KERNEL_BASE,
    recipe: KERNEL_RECIPE,
    release,
    seconds: Math.round((performance.now() - t0) / 1000),
    cpuSeconds: Math.round(childCpuSeconds() - cpu0),
    sourceSeconds: Math.round(src.seconds),
    jobs,
    at: new Date().toISOString(),
  };
  fs.writeFileSync(path.join(tmp, 'build.json'), `${JSON.stringify(record, null, 2)}\n`);
  fs.copyFileSync(log, path.join(tmp, 'build.log'));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  fs.writeFileSync(complete(dir), '');
  prune(o.cache, dir, version);
  const tree = unpackedKernel(dir, 'built');
  if (typeof tree === 'string') throw new LabError({ message: `the built kernel: ${tree}`, code: 'EKBUILD' });
  const mib = (fs.statSync(tree.vmlinuz).size / 2 ** 20).toFixed(1);
  const modules = tail(path.join(tree.modulesDir ?? dir, 'modules.order'), 10_000).length;
  o.say(
    `built the lab kernel ${release} in ${formatSeconds(record.seconds)} with ${jobs} jobs, ` +
      `${formatSeconds(record.cpuSeconds)} of CPU (bzImage ${mib} MiB, ${modules} modules; ${dir})`,
  );
  return { tree: { ...tree, package: SOURCE_PACKAGE }, record, dir };
}

/** `754` as `12 min 34 s`. */
export function formatSeconds(s: number): string {
  return s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`;
}

/** Keeps the newest built kernels, and the source and object trees of `version` alone. */
function prune(cache: string, keep: string, version: string): void {
  const built = fs
    .readdirSync(cache)
    .filter((n) => n.startsWith(BUILT_PREFIX) && path.join(cache, n) !== keep)
    .map((n) => path.join(cache, n))
    .sort((a, b) => mtime(complete(b)) - mtime(complete(a)));
  for (const d of built.slice(KEEP_BUILT)) fs.rmSync(d, { recursive: true, force: true });
  for (const n of fs.readdirSync(cache)) {
    const m = /^linux-(source|obj)-(.+)$/.exec(n);
    if (m && m[2] !== version) fs.rmSync(path.join(cache, n), { recursive: true, force: true });
  }
}
