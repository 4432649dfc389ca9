import * as fs from 'node:fs';
import * as path from 'node:path';

import { compareVersions, neededVersions } from './elf-versions';
import { ROOT } from './helpers';

// Node 20's official Linux binaries run on glibc 2.28 with GCC 8's libstdc++; the addon must need
// nothing newer, or the prebuild fails to load there (native/symbol_versions.h keeps it so).
const CEILINGS: Record<string, string> = { GLIBC: '2.28', GLIBCXX: '3.4.25', CXXABI: '1.3.11' };

// eslint-disable-next-line @typescript-eslint/no-require-imports
const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };

/** The addon the tests load, and every prebuild present. */
function addons(): string[] {
  const found = new Set([nodeGypBuild.path(ROOT)]);
  const prebuilds = path.join(ROOT, 'prebuilds', 'linux-x64');
  if (fs.existsSync(prebuilds)) {
    for (const f of fs.readdirSync(prebuilds)) if (f.endsWith('.node')) found.add(path.join(prebuilds, f));
  }
  return [...found];
}

test.each(addons())('%s needs no glibc or libstdc++ symbol version newer than Node 20 has', (file) => {
  const tooNew: string[] = [];
  for (const n of neededVersions(file)) {
    const m = /^([A-Z]+)_([0-9.]+)$/.exec(n.version);
    const ceiling = m ? CEILINGS[m[1]!] : undefined;
    if (!m || ceiling === undefined) continue;
    if (compareVersions(m[2]!, ceiling) > 0) tooNew.push(`${n.version} (${n.file}): ${n.symbols.join(', ')}`);
  }
  expect(tooNew).toEqual([]);
});

test('the ELF reader sees the versions the addon binds', () => {
  const versions = neededVersions(nodeGypBuild.path(ROOT));
  const glibc = versions.filter((n) => n.file === 'libc.so.6').map((n) => n.version);
  expect(glibc).toContain('GLIBC_2.2.5');
  expect(versions.flatMap((n) => n.symbols)).toContain('ioctl');
  expect(compareVersions('2.3.3', '2.28')).toBeLessThan(0);
  expect(compareVersions('2.34', '2.28')).toBeGreaterThan(0);
});
