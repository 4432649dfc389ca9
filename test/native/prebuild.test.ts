import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ROOT, tempDir } from './helpers';

// The package must load from its prebuild alone: copy what a published package contains (lib,
// package.json, prebuilds) into an empty directory with no build/ and no sources, and load it with
// PREBUILDS_ONLY=1 so node-gyp-build cannot fall back to a local build.

const PREBUILD_DIR = path.join(ROOT, 'prebuilds', 'linux-x64');

function newestMtime(paths: string[]): number {
  let newest = 0;
  for (const p of paths) {
    const st = fs.statSync(p);
    if (st.isDirectory())
      newest = Math.max(newest, newestMtime(fs.readdirSync(p).map((f) => path.join(p, f))));
    else newest = Math.max(newest, st.mtimeMs);
  }
  return newest;
}

/**
 * The prebuild directory: `npm run build:prebuild`'s (or prepack's) output if current, else one
 * built in a scratch copy with the same command.
 */
function prebuilds(scratch: string): string {
  const sources = newestMtime([path.join(ROOT, 'native'), path.join(ROOT, 'binding.gyp')]);
  const existing = fs.existsSync(PREBUILD_DIR)
    ? fs.readdirSync(PREBUILD_DIR).filter((f) => f.endsWith('.node'))
    : [];
  if (existing.length > 0 && newestMtime(existing.map((f) => path.join(PREBUILD_DIR, f))) >= sources) {
    return path.dirname(PREBUILD_DIR);
  }
  // Build in a copy so the working tree's build/ is left alone.
  const src = path.join(scratch, 'src');
  fs.mkdirSync(src);
  for (const entry of ['package.json', 'binding.gyp', 'native']) {
    fs.cpSync(path.join(ROOT, entry), path.join(src, entry), { recursive: true });
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(src, 'node_modules'));
  const command = (
    JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    }
  ).scripts['build:prebuild']!.split(' ');
  expect(command[0]).toBe('prebuildify');
  execFileSync(path.join(ROOT, 'node_modules', '.bin', 'prebuildify'), command.slice(1), {
    cwd: src,
    stdio: 'ignore',
  });
  return path.join(src, 'prebuilds');
}

test('the package loads and works from prebuilds/ alone (PREBUILDS_ONLY=1, no build/)', () => {
  const tmp = tempDir('vfio-bridge-prebuild-');
  try {
    const from = prebuilds(tmp.dir);
    // Tagged glibc, so that node-gyp-build never offers it to a musl system.
    expect(fs.readdirSync(path.join(from, 'linux-x64'))).toContain('vfio-bridge.glibc.node');

    const pkg = path.join(tmp.dir, 'pkg');
    fs.mkdirSync(pkg);
    fs.cpSync(path.join(ROOT, 'lib'), path.join(pkg, 'lib'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'package.json'), path.join(pkg, 'package.json'));
    fs.cpSync(from, path.join(pkg, 'prebuilds'), { recursive: true });
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);

    const script = `
      const fs = require('node:fs');
      const { Mapping, VfioError, memfd } = require('./lib');
      const fd = memfd('prebuild', 4096);
      const m = Mapping.fromFd(fd, 0, 4096);
      m.write32(4, 0xcafef00d);
      const value = m.read32(4);
      fs.ftruncateSync(fd, 0);
      let code;
      try { m.read8(0); } catch (e) { code = e instanceof VfioError && e.code; }
      console.log(JSON.stringify({ addon: require('node-gyp-build').path(__dirname), value, code }));
    `;
    const r = spawnSync(process.execPath, ['-r', '@swc-node/register', '-e', script], {
      cwd: pkg,
      encoding: 'utf8',
      env: { ...process.env, PREBUILDS_ONLY: '1' },
    });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { addon: string; value: number; code: string };
    expect(out.addon.startsWith(path.join(fs.realpathSync(pkg), 'prebuilds', 'linux-x64'))).toBe(true);
    expect(out).toMatchObject({ value: 0xcafef00d, code: 'SIGBUS' });
  } finally {
    tmp.remove();
  }
}, 180_000);
