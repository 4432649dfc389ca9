import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ROOT, tempDir } from './helpers';

// scripts/install.js, the package's install step, in a copy of what a user installs: it keeps a
// prebuild that loads, and otherwise compiles; a failed compile (here: node headers that are not
// there, so node-gyp fails at once and offline) must end in one line saying what to install.

// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = (require('node-gyp-build') as { path(dir: string): string }).path(ROOT);

function install(opts: { prebuild: boolean; preload?: string; env?: Record<string, string> }) {
  const tmp = tempDir('vfio-bridge-install-');
  const pkg = path.join(tmp.dir, 'pkg');
  fs.mkdirSync(path.join(pkg, 'scripts'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'scripts', 'install.js'), path.join(pkg, 'scripts', 'install.js'));
  fs.cpSync(path.join(ROOT, 'package.json'), path.join(pkg, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
  if (opts.prebuild) {
    fs.mkdirSync(path.join(pkg, 'prebuilds', 'linux-x64'), { recursive: true });
    fs.cpSync(addon, path.join(pkg, 'prebuilds', 'linux-x64', 'vfio-bridge.glibc.node'));
  }
  fs.mkdirSync(path.join(tmp.dir, 'no-headers'));
  const r = spawnSync(
    process.execPath,
    [...(opts.preload ? ['-e', `${opts.preload}; require('./scripts/install.js')`] : ['scripts/install.js'])],
    {
      cwd: pkg,
      encoding: 'utf8',
      env: {
        ...process.env,
        PATH: `${path.join(ROOT, 'node_modules', '.bin')}${path.delimiter}${process.env.PATH}`,
        TMPDIR: tmp.dir,
        npm_config_nodedir: path.join(tmp.dir, 'no-headers'),
        ...opts.env,
      },
    },
  );
  const built = fs.existsSync(path.join(pkg, 'build'));
  const logs = fs.readdirSync(tmp.dir).filter((f) => f.startsWith('vfio-bridge-install-'));
  tmp.remove();
  return { status: r.status, stderr: r.stderr, built, logs };
}

test('a prebuild that loads is kept: nothing is compiled and nothing is printed', () => {
  expect(install({ prebuild: true })).toEqual({ status: 0, stderr: '', built: false, logs: [] });
}, 60_000);

test('the glibc-tagged prebuild is not offered on musl (node-gyp-build reads LIBC), so it compiles', () => {
  const r = install({ prebuild: true, env: { LIBC: 'musl' } });
  expect(r).toMatchObject({ status: 1, built: true, logs: [expect.any(String)] });
  expect(r.stderr).toMatch(/^vfio-bridge: no prebuild fits .*\n$/);
}, 60_000);

test('without a prebuild a failed compile fails the install with one line and keeps the log', () => {
  const r = install({ prebuild: false });
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(
    /^vfio-bridge: no prebuild fits \(linux-x64, glibc [0-9.]+, Node [0-9.]+\) and compiling the addon failed: install python3, make and g\+\+ .*node-gyp's output is in \S+vfio-bridge-install-\d+\.log\n$/,
  );
  expect(r.logs).toHaveLength(1);
}, 60_000);

test('off Linux x86-64 (an install forced past os and cpu) nothing is built and the install succeeds', () => {
  const r = install({
    prebuild: false,
    preload: "Object.defineProperty(process, 'arch', { value: 'arm64' })",
  });
  expect(r).toEqual({
    status: 0,
    stderr:
      'vfio-bridge: the native addon needs Linux x86-64 (this is linux-arm64): not building it; ' +
      'only vfio-bridge/memory will work\n',
    built: false,
    logs: [],
  });
}, 60_000);
