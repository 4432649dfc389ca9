import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { PAGE_SIZE } from '../../lib';
import { native } from '../../lib/native';
import { ROOT, tempDir } from './helpers';

// The addon loads on first use (lib/native.ts): the memory model must work where it cannot load,
// and importing the whole package there must succeed, failing only at the first native call.

/** Runs `script` (CommonJS, TypeScript sources) in a copy of lib/ that has no addon to load. */
function withoutAddon(script: string): { status: number | null; stdout: string; stderr: string } {
  const tmp = tempDir('vfio-bridge-no-addon-');
  try {
    fs.cpSync(path.join(ROOT, 'lib'), path.join(tmp.dir, 'lib'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'package.json'), path.join(tmp.dir, 'package.json'));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(tmp.dir, 'node_modules'));
    return spawnSync(process.execPath, ['-r', '@swc-node/register', '-e', script], {
      cwd: tmp.dir,
      encoding: 'utf8',
      env: { ...process.env, PREBUILDS_ONLY: '1' },
    });
  } finally {
    tmp.remove();
  }
}

test('the memory model works without the addon', () => {
  const r = withoutAddon(`
    const { AddressSpace, MemoryRegion, renderMtree } = require('./lib/memory');
    const root = MemoryRegion.container('root', 0x10000);
    const buf = new ArrayBuffer(0x100);
    root.addSubregion(MemoryRegion.ram('ram', 0x100, buf), 0x1000);
    const as = new AddressSpace('memory', root);
    as.write(0x1000, 4, 0x11223344);
    console.log(JSON.stringify({ value: as.read(0x1000, 4), mtree: renderMtree(as).includes('ram') }));
  `);
  expect(r.stderr).toBe('');
  expect(JSON.parse(r.stdout)).toEqual({ value: 0x11223344, mtree: true });
}, 60_000);

test('the whole package imports without the addon and fails with one line at the first native use', () => {
  const r = withoutAddon(`
    const vb = require('./lib');
    const before = Object.keys(vb).length > 0 && vb.PAGE_SIZE;
    const errors = [];
    for (const use of [() => vb.memfd('x', 4096), () => vb.Container.open()]) {
      try { use(); errors.push(null); } catch (e) { errors.push({ name: e.name, code: e.code, message: e.message, hint: e.hint }); }
    }
    console.log(JSON.stringify({ before, errors }));
  `);
  expect(r.stderr).toBe('');
  const out = JSON.parse(r.stdout) as {
    before: number;
    errors: { name: string; code: string; message: string; hint: string }[];
  };
  expect(out.before).toBe(4096);
  expect(out.errors).toHaveLength(2);
  for (const e of out.errors) {
    expect(e).toMatchObject({ name: 'NativeAddonError', code: 'ERR_VFIO_BRIDGE_NO_ADDON' });
    expect(e.message).toMatch(/^vfio-bridge: cannot load its native addon \(No native build was found/);
    expect(e.hint).toContain('vfio-bridge/memory works without it');
    expect(e.message).not.toContain('\n');
  }
}, 60_000);

test('the parts that make native calls load the addon when imported; the memory model never does', () => {
  const loaded = (what: string): boolean => {
    const r = spawnSync(
      process.execPath,
      [
        '-r',
        '@swc-node/register',
        '-e',
        `require('./lib/${what}'); console.log(require('fs').readFileSync('/proc/self/maps', 'utf8').includes('vfio_bridge.node'))`,
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout) as boolean;
  };
  expect(loaded('memory')).toBe(false);
  expect(loaded('kvm')).toBe(true);
  expect(loaded('vfio')).toBe(true);
}, 60_000);

test("PAGE_SIZE is the addon's sysconf(_SC_PAGESIZE)", () => {
  expect(native.pageSize).toBe(PAGE_SIZE);
});
