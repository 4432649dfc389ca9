#!/usr/bin/env node
'use strict';
// The package's `install` step. node-gyp-build keeps the prebuild when it loads here and compiles
// the addon when none fits (another libc, an older glibc); this wrapper turns a failed compile into
// one line that says what is missing, with node-gyp's log kept in a file, instead of pages of it.
// Where the addon cannot exist (not Linux x86-64: an install forced past package.json's os and
// cpu), nothing is built and only the pure-TypeScript entry points (vfio-bridge/memory) work.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const platform = `${process.platform}-${process.arch}`;

if (platform !== 'linux-x64') {
  console.error(
    `vfio-bridge: the native addon needs Linux x86-64 (this is ${platform}): not building it; ` +
      'only vfio-bridge/memory will work',
  );
  process.exit(0);
}

const r = spawnSync(process.execPath, [require.resolve('node-gyp-build/bin.js')], {
  cwd: root,
  encoding: 'utf8',
  maxBuffer: 256 << 20,
});
if (r.status === 0) process.exit(0);

const log = path.join(os.tmpdir(), `vfio-bridge-install-${process.pid}.log`);
fs.writeFileSync(log, `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `${r.error.stack}\n` : ''}`);
const glibc = process.report.getReport().header.glibcVersionRuntime;
console.error(
  `vfio-bridge: no prebuild fits (linux-x64, ${glibc ? `glibc ${glibc}` : 'musl'}, ` +
    `Node ${process.versions.node}) and compiling the addon failed: install python3, make and g++ ` +
    '(Debian/Ubuntu: apt-get install build-essential python3; Alpine: apk add build-base python3 ' +
    `linux-headers) and reinstall; node-gyp's output is in ${log}`,
);
process.exit(1);
