/**
 * Kernel config fragments as the lab's own kernel is made of them (scripts/lab/kernel/lab.config):
 * read a fragment, merge it into a base config, and check that the config Kconfig settled on has
 * every value the fragment asked for. Kconfig drops a symbol whose dependencies are missing
 * without a word, so the check is what turns a missing dependency into a failed build that names
 * it. Also the key a built kernel is cached under. Pure: files are read by the caller, except the
 * Kconfig sources {@link explainMismatches} searches.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { LabError } from './errors';

/** One line of a fragment: `CONFIG_X=value`, or `# CONFIG_X is not set` (value `n`). */
export interface FragmentEntry {
  symbol: string;
  /** `y`, `m`, `n` (not set), or the value as written (`"-lab"`, `0x1000`, `250`). */
  value: string;
  /** 1-based, for messages. */
  line: number;
}

const SET_RE = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/;
const UNSET_RE = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/;

/**
 * parseFragment: the settings of a config fragment; blank lines and other comments are skipped.
 * @throws LabError EKCONFIG naming the line of anything else, or of a symbol set twice
 */
export function parseFragment(text: string, name = 'the fragment'): FragmentEntry[] {
  const out: FragmentEntry[] = [];
  const seen = new Map<string, number>();
  text.split('\n').forEach((raw, i) => {
    const l = raw.trim();
    const line = i + 1;
    const set = SET_RE.exec(l);
    const unset = UNSET_RE.exec(l);
    let entry: FragmentEntry;
    if (set) {
      if (set[2] === '')
        throw fragmentError(name, line, `${set[1]}= has no value`, 'write y, m, a number or a "string"');
      entry = { symbol: set[1], value: set[2], line };
    } else if (unset) entry = { symbol: unset[1], value: 'n', line };
    else if (l === '' || l.startsWith('#')) return;
    else
      throw fragmentError(
        name,
        line,
        `${JSON.stringify(l)} is not a config line`,
        'write CONFIG_NAME=value or # CONFIG_NAME is not set',
      );
    if (entry.value === 'n' && set)
      throw fragmentError(name, line, `${entry.symbol}=n`, `write # ${entry.symbol} is not set`);
    const before = seen.get(entry.symbol);
    if (before !== undefined)
      throw fragmentError(name, line, `${entry.symbol} is set again (first on line ${before})`, 'keep one');
    seen.set(entry.symbol, line);
    out.push(entry);
  });
  return out;
}

function fragmentError(name: string, line: number, what: string, hint: string): LabError {
  return new LabError({ message: `${name}, line ${line}: ${what}`, code: 'EKCONFIG', hint });
}

/** A config's settings from its text: `CONFIG_X=value` lines; `is not set` and absent are both unset. */
export function configValues(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^(CONFIG_[A-Za-z0-9_]+)=(.*)$/gm)) out.set(m[1], m[2]);
  return out;
}

/**
 * mergeFragment: `base` (a .config's text) without its lines for the fragment's symbols, and the
 * fragment's settings after it, as scripts/kconfig/merge_config.sh -m does. After, not in place:
 * of a choice's members set to y, Kconfig takes the last, so the fragment's
 * CC_OPTIMIZE_FOR_PERFORMANCE=y must come after the base's CC_OPTIMIZE_FOR_SIZE=y.
 */
export function mergeFragment(base: string, entries: readonly FragmentEntry[]): string {
  const want = new Set(entries.map((e) => e.symbol));
  const lines = base.split('\n').filter((l) => {
    const sym = SET_RE.exec(l)?.[1] ?? UNSET_RE.exec(l)?.[1];
    return sym === undefined || !want.has(sym);
  });
  while (lines.length > 0 && lines.at(-1) === '') lines.pop();
  for (const e of entries)
    lines.push(e.value === 'n' ? `# ${e.symbol} is not set` : `${e.symbol}=${e.value}`);
  return `${lines.join('\n')}\n`;
}

/** A symbol the final config does not have as the fragment asked. */
export interface ConfigMismatch {
  symbol: string;
  wanted: string;
  /** What the config has: a value, or `n` when unset. */
  got: string;
  line: number;
}

/** checkConfig: the fragment's settings that `config` (a final .config's values) does not have. */
export function checkConfig(
  entries: readonly FragmentEntry[],
  config: ReadonlyMap<string, string>,
): ConfigMismatch[] {
  const out: ConfigMismatch[] = [];
  for (const e of entries) {
    const got = config.get(e.symbol) ?? 'n';
    if (got !== e.value) out.push({ symbol: e.symbol, wanted: e.value, got, line: e.line });
  }
  return out;
}

/** The Kconfig text of one symbol: its dependencies and the `if` blocks around it. */
export interface SymbolSource {
  file: string;
  depends: string[];
}

/** What the Kconfig sources say of some symbols: where each is defined, and what selects it. */
export interface KconfigFacts {
  sources: Map<string, SymbolSource[]>;
  /** Symbol to the symbols whose `select` names it. */
  selectedBy: Map<string, string[]>;
}

const BLOCK_END_RE = /^\s*(config|menuconfig|choice|endchoice|menu|endmenu|if|endif|source|comment)\b/;

/**
 * kconfigFacts: where each of `symbols` (without CONFIG_) is defined under `srcDir`, with its
 * `depends on` lines and the conditions of the `if` blocks it sits in (menus' own conditions and
 * those of the files that source it are not followed), and which symbols select it.
 */
export function kconfigFacts(srcDir: string, symbols: readonly string[]): KconfigFacts {
  const want = new Set(symbols);
  const sources = new Map<string, SymbolSource[]>();
  const selectedBy = new Map<string, string[]>();
  const scan = (file: string): void => {
    const ifs: string[] = [];
    let name: string | null = null;
    let current: SymbolSource | null = null;
    // Help text runs until a line indented less than its first line.
    let help: number | null = null;
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      if (help !== null) {
        if (line.trim() === '') continue;
        const indent = /^\s*/.exec(line)![0].replace(/\t/g, '        ').length;
        if (help < 0) help = indent;
        if (indent >= help) continue;
        help = null;
      }
      const m = /^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$/.exec(line);
      if (m) {
        name = m[1];
        current = want.has(name) ? { file: path.relative(srcDir, file), depends: [...ifs] } : null;
        if (current) sources.set(name, [...(sources.get(name) ?? []), current]);
        continue;
      }
      if (/^\s*(help|---help---)\s*$/.test(line)) {
        help = -1;
        continue;
      }
      const ifm = /^\s*if\s+(.+?)\s*$/.exec(line);
      if (ifm) ifs.push(ifm[1]);
      else if (/^\s*endif\b/.test(line)) ifs.pop();
      if (BLOCK_END_RE.test(line)) {
        name = null;
        current = null;
      }
      const dep = /^\s*depends\s+on\s+(.+?)\s*$/.exec(line);
      if (dep && current) current.depends.push(dep[1]);
      const sel = /^\s*select\s+([A-Za-z0-9_]+)/.exec(line);
      if (sel && name !== null && want.has(sel[1]))
        selectedBy.set(sel[1], [...(selectedBy.get(sel[1]) ?? []), name]);
    }
  };
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'Documentation' && e.name !== 'tools' && !e.name.startsWith('.')) walk(p);
      } else if (e.name.startsWith('Kconfig')) scan(p);
    }
  };
  walk(srcDir);
  return { sources, selectedBy };
}

/**
 * `expr` with each symbol's value in the config after it, as menuconfig shows them: `PCI [=y]`. A
 * comparison (`AGP=n`, `X != Y`) is shown with its own value: `AGP=n [AGP=y]`.
 */
export function annotate(expr: string, config: ReadonlyMap<string, string>): string {
  const value = (sym: string): string => config.get(`CONFIG_${sym}`) ?? 'n';
  return expr.replace(
    /\b((?=[A-Z0-9_]*[A-Z])[A-Z0-9][A-Z0-9_]*)\b(\s*!?=\s*([A-Za-z0-9_]+))?/g,
    (all, sym: string, cmp: string | undefined) =>
      cmp === undefined ? `${sym} [=${value(sym)}]` : `${all} [${sym}=${value(sym)}]`,
  );
}

/**
 * explainMismatches: one line per mismatch: what was asked and got, and from the Kconfig sources
 * under `srcDir`, the symbol's dependencies with their values (the unmet ones are among them), or
 * for one that ended up on, the symbols that are on and select it.
 */
export function explainMismatches(
  mismatches: readonly ConfigMismatch[],
  config: ReadonlyMap<string, string>,
  srcDir: string | null,
): string[] {
  const facts: KconfigFacts =
    srcDir === null
      ? { sources: new Map(), selectedBy: new Map() }
      : kconfigFacts(srcDir, mismatches.map(bare));
  const on = (sym: string): boolean => (config.get(`CONFIG_${sym}`) ?? 'n') !== 'n';
  return mismatches.map((m) => {
    const head = `${m.symbol}=${m.wanted} (line ${m.line}) ended up ${m.got === 'n' ? 'not set' : m.got}`;
    const src = facts.sources.get(bare(m));
    if (src === undefined) return srcDir === null ? head : `${head}: no such symbol in this kernel's Kconfig`;
    const where = src.map((s) => s.file).join(', ');
    const selectors = (facts.selectedBy.get(bare(m)) ?? []).filter(on);
    if (m.got !== 'n' && selectors.length > 0)
      return `${head}: selected by ${[...new Set(selectors)].map((x) => annotate(x, config)).join(', ')} (${where})`;
    const deps = src.flatMap((s) => s.depends.map((d) => annotate(d, config)));
    return deps.length === 0
      ? `${head} (${where}; no dependencies: a choice or a select decided)`
      : `${head}: depends on ${deps.join(' && ')} (${where})`;
  });
}

const bare = (m: { symbol: string }): string => m.symbol.slice('CONFIG_'.length);

/** What a built kernel is cached by. */
export interface BuildKeyInputs {
  /** The source package's version (`6.12.118-1~deb12u1`). */
  sourceVersion: string;
  /** The base config target (`tinyconfig`). */
  base: string;
  entries: readonly FragmentEntry[];
  /** The build recipe's version: bumped whenever how a kernel is built changes. */
  recipe: number;
}

/**
 * buildKey: 16 hex digits of a hash of the inputs. The fragment counts by its settings, sorted,
 * so comments and the order of lines do not make a new kernel.
 */
export function buildKey(k: BuildKeyInputs): string {
  const settings = k.entries.map((e) => `${e.symbol}=${e.value}`).sort();
  const text = JSON.stringify({ source: k.sourceVersion, base: k.base, recipe: k.recipe, settings });
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/**
 * missingConfig: which of `wants` a kernel's config lacks, one phrase each. A want is `NAME`
 * (built in or a module), `NAME=value` (exactly that; `=n`: not set), with or without `CONFIG_`.
 * @throws LabError EKCONFIG for a want that is none of those
 */
export function missingConfig(config: ReadonlyMap<string, string>, wants: readonly string[]): string[] {
  const out: string[] = [];
  for (const w of wants) {
    const m = /^(?:CONFIG_)?([A-Za-z0-9_]+)(?:=(.+))?$/.exec(w.trim());
    if (!m)
      throw new LabError({
        message: `${JSON.stringify(w)} is not a config symbol`,
        code: 'EKCONFIG',
        hint: 'write IOMMUFD, CONFIG_IOMMUFD, IOMMUFD=y or IOMMUFD=n',
      });
    const symbol = `CONFIG_${m[1]}`;
    const got = config.get(symbol) ?? 'n';
    const is = got === 'n' ? 'not set' : `it is ${got}`;
    if (m[2] === undefined) {
      if (got !== 'y' && got !== 'm') out.push(`${symbol} (${is})`);
    } else if (got !== m[2]) out.push(`${symbol}=${m[2]} (${is})`);
  }
  return out;
}
