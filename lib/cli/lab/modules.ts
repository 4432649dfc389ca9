/**
 * A kernel's modules as the lab needs them: which are built in, where each module file is, and
 * the order to load a set in, dependencies first (the guest's busybox insmod resolves none). The
 * dependencies come from modules.dep where depmod wrote one (a host's own kernel), else from each
 * module's own `depends=` (a Debian package as unpacked, which has no modules.dep). Soft
 * dependencies (`softdep=pre: a post: b`, or modules.softdep) are loaded as modprobe would, before and
 * after the module; one the kernel does not have is not an error (modprobe goes on without it) but is
 * named in the result. A soft dependency may name an alias (`crypto-crc32c`): it is resolved through
 * modules.alias where depmod wrote one.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { LabError } from './errors';

/** A module name as the kernel compares them: `-` and `_` are the same. */
export const moduleKey = (name: string): string => name.replace(/-/g, '_');

const KO_RE = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/;

/** The tool that decompresses each kind of module file. */
const DECOMPRESS: Record<string, { tool: string; args: string[]; pkg: string }> = {
  '.xz': { tool: 'xz', args: ['-dc'], pkg: 'xz-utils' },
  '.zst': { tool: 'zstd', args: ['-dcq'], pkg: 'zstd' },
};

/**
 * readModule: a module file's bytes, decompressed (.ko, .ko.gz, .ko.xz, .ko.zst).
 * @throws LabError when the file or its decompressor fails
 */
export function readModule(file: string): Buffer {
  const ext = KO_RE.exec(path.basename(file))?.[2] ?? '';
  try {
    if (ext === '') return fs.readFileSync(file);
    if (ext === '.gz') return zlib.gunzipSync(fs.readFileSync(file));
  } catch (e) {
    throw new LabError({
      message: `cannot read the module ${file}: ${(e as Error).message}`,
      code: 'EIO',
      cause: e,
    });
  }
  const d = DECOMPRESS[ext];
  const r = spawnSync(d.tool, [...d.args, file], { maxBuffer: 256 * 1024 * 1024 });
  if (r.error || r.status !== 0) {
    throw new LabError({
      message: `cannot decompress ${file} with ${d.tool}: ${r.error?.message ?? String(r.stderr).trim()}`,
      code: (r.error as NodeJS.ErrnoException | undefined)?.code ?? 'EIO',
      hint: `install ${d.pkg}`,
    });
  }
  return r.stdout;
}

/** The `depends=` of a module's .modinfo section, from its decompressed bytes. */
export function modinfoDepends(bytes: Buffer): string[] {
  const at = bytes.indexOf('\0depends=');
  if (at < 0) return [];
  const end = bytes.indexOf(0, at + 1);
  const value = bytes.toString('latin1', at + 9, end < 0 ? bytes.length : end);
  return value === '' ? [] : value.split(',');
}

/** A module's soft dependencies: loaded before it (`pre`) and after it (`post`) when the kernel has them. */
export interface SoftDeps {
  pre: string[];
  post: string[];
}

/**
 * The soft dependencies in `text`, as modinfo's `softdep=` and modules.softdep write them:
 * `pre: a b post: c`. Names before any `pre:`/`post:` are taken as `pre` (loading early is harmless).
 */
export function parseSoftdep(text: string, into: SoftDeps = { pre: [], post: [] }): SoftDeps {
  let list = into.pre;
  for (const word of text.trim().split(/\s+/).filter(Boolean)) {
    if (word === 'pre:') list = into.pre;
    else if (word === 'post:') list = into.post;
    else list.push(word);
  }
  return into;
}

/** Every `softdep=` of a module's .modinfo section (a module may carry several), from its decompressed bytes. */
export function modinfoSoftdeps(bytes: Buffer): SoftDeps {
  const deps: SoftDeps = { pre: [], post: [] };
  for (let at = bytes.indexOf('\0softdep='); at >= 0; at = bytes.indexOf('\0softdep=', at + 1)) {
    const end = bytes.indexOf(0, at + 1);
    parseSoftdep(bytes.toString('latin1', at + 9, end < 0 ? bytes.length : end), deps);
  }
  return deps;
}

/** One kernel's modules. */
export class ModuleIndex {
  readonly dir: string;
  readonly #files = new Map<string, string>();
  readonly #builtin = new Set<string>();
  readonly #deps = new Map<string, string[]>();
  readonly #softdeps = new Map<string, SoftDeps>();
  readonly #ownSoftdeps = new Map<string, SoftDeps>();
  readonly #aliases = new Map<string, string>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * load: the index of `dir` (a lib/modules/VERSION directory): modules.builtin, the module files
   * below it, and modules.dep, modules.softdep and modules.alias where they are.
   */
  static load(dir: string): ModuleIndex {
    const idx = new ModuleIndex(dir);
    const lines = (name: string): string[] => {
      try {
        return fs.readFileSync(path.join(dir, name), 'utf8').split('\n').filter(Boolean);
      } catch {
        return [];
      }
    };
    for (const l of lines('modules.builtin')) {
      const m = KO_RE.exec(path.basename(l));
      if (m) idx.#builtin.add(moduleKey(m[1]));
    }
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else {
          const m = KO_RE.exec(e.name);
          if (m && !idx.#files.has(moduleKey(m[1]))) idx.#files.set(moduleKey(m[1]), p);
        }
      }
    };
    walk(dir);
    for (const l of lines('modules.dep')) {
      const [mod, deps = ''] = l.split(':');
      const m = KO_RE.exec(path.basename(mod));
      if (m) {
        idx.#deps.set(
          moduleKey(m[1]),
          deps
            .trim()
            .split(/\s+/)
            .filter(Boolean)
            .map((d) => KO_RE.exec(path.basename(d))?.[1] ?? d),
        );
      }
    }
    for (const l of lines('modules.softdep')) {
      const m = /^softdep\s+(\S+)\s+(.*)$/.exec(l);
      if (m) {
        const key = moduleKey(m[1]);
        idx.#softdeps.set(key, parseSoftdep(m[2], idx.#softdeps.get(key)));
      }
    }
    for (const l of lines('modules.alias')) {
      const m = /^alias\s+(\S+)\s+(\S+)$/.exec(l);
      // Only plain names (crypto-crc32c), not device patterns (pci:v00008086d*): those are what
      // soft dependencies name.
      if (m && !/[*?[]/.test(m[1]) && !idx.#aliases.has(m[1])) idx.#aliases.set(m[1], moduleKey(m[2]));
    }
    return idx;
  }

  /** A module file's bytes, decompressed once for both kinds of dependency it names. */
  #read(key: string, file: string): Buffer {
    if (this.#lastRead?.key !== key) this.#lastRead = { key, bytes: readModule(file) };
    return this.#lastRead.bytes;
  }

  #lastRead: { key: string; bytes: Buffer } | undefined;

  /** Whether `name` is built into the kernel. */
  builtin(name: string): boolean {
    return this.#builtin.has(moduleKey(name));
  }

  /** The module file of `name`, if the kernel has it as a module. */
  file(name: string): string | undefined {
    return this.#files.get(moduleKey(name));
  }

  /** Whether the kernel has `name`, built in or as a module. */
  has(name: string): boolean {
    return this.builtin(name) || this.file(name) !== undefined;
  }

  /** The modules `name` needs loaded first (modules.dep, else its own depends=). */
  depends(name: string): string[] {
    const key = moduleKey(name);
    let deps = this.#deps.get(key);
    if (deps === undefined) {
      const file = this.file(name);
      deps = file === undefined ? [] : modinfoDepends(this.#read(key, file));
      this.#deps.set(key, deps);
    }
    return deps;
  }

  /** The soft dependencies of `name`: modules.softdep's and its own softdep= lines together. */
  softdeps(name: string): SoftDeps {
    const key = moduleKey(name);
    const listed = this.#softdeps.get(key);
    let own = this.#ownSoftdeps.get(key);
    if (own === undefined) {
      const file = this.file(name);
      own = file === undefined ? { pre: [], post: [] } : modinfoSoftdeps(this.#read(key, file));
      this.#ownSoftdeps.set(key, own);
    }
    return { pre: [...(listed?.pre ?? []), ...own.pre], post: [...(listed?.post ?? []), ...own.post] };
  }

  /** The module `name` stands for: itself, or what modules.alias maps it to. */
  resolve(name: string): string {
    const key = moduleKey(name);
    if (this.has(key)) return key;
    return this.#aliases.get(name) ?? this.#aliases.get(key) ?? key;
  }

  /**
   * loadOrder: the modules to load for `names`, each after those it depends on and after its `pre`
   * soft dependencies, its `post` ones after it, without the built-in ones, each under its file's
   * name; the names asked for (or hard dependencies) the kernel has neither built in nor as a module
   * (`missing`); and the soft dependencies it does not have (`softMissing`, as `module: name`), which
   * modprobe would go on without.
   */
  loadOrder(names: readonly string[]): { order: string[]; missing: string[]; softMissing: string[] } {
    const order: string[] = [];
    const missing: string[] = [];
    const softMissing: string[] = [];
    const seen = new Set<string>();
    const visit = (name: string): void => {
      const key = moduleKey(name);
      if (seen.has(key) || this.builtin(key)) return;
      seen.add(key);
      const file = this.file(key);
      if (file === undefined) {
        missing.push(name);
        return;
      }
      const soft = this.softdeps(key);
      const deps = this.depends(key);
      const visitSoft = (d: string): void => {
        const target = this.resolve(d);
        if (this.has(target)) visit(target);
        else softMissing.push(`${name}: ${d}`);
      };
      soft.pre.forEach(visitSoft);
      for (const d of deps) visit(d);
      order.push(KO_RE.exec(path.basename(file))![1]);
      soft.post.forEach(visitSoft);
    };
    for (const n of names) visit(n);
    return { order, missing, softMissing };
  }
}
