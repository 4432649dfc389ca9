// What the lab guest is given: QEMU's command line, the plan its init sources, the script that runs
// the command (every word quoted so that bash reads it back as given), and the initramfs itself.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { parseDeviceSpec } from '../../../../lib/cli/lab/devices';
import type { KernelTree } from '../../../../lib/cli/lab/kernel';
import { layOut, type Layout } from '../../../../lib/cli/lab/layout';
import {
  commandScript,
  guestPlan,
  keptPaths,
  LAB_CPU,
  qemuArgs,
  shQuote,
} from '../../../../lib/cli/lab/machine';
import { ModuleIndex } from '../../../../lib/cli/lab/modules';
import { buildInitramfs, initramfsPath, isStaticElf, newcArchive } from '../../../../lib/cli/lab/provision';
import { fakeKernel, moduleBytes } from './fake-kernel';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-lab-machine-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const layout = (...specs: string[]): Layout =>
  layOut(specs.map(parseDeviceSpec), { runDir: '/c/run.1', fileSize: () => 8192 });

test('QEMU: q35 under TCG with one vCPU, the IOMMU, the kernel, the devices, extra arguments, then the 9p exports', () => {
  const args = qemuArgs(layout('edu'), {
    qemu: 'qemu-system-x86_64',
    kernel: '/k',
    initramfs: '/i',
    runDir: '/c/run,1',
    memoryMiB: 4096,
    append: 'foo=1',
    extra: ['-object', 'x'],
  });
  expect(args.slice(0, 10)).toEqual([
    '-M',
    'q35',
    '-accel',
    'tcg,thread=multi',
    '-smp',
    '1',
    '-m',
    '4096',
    '-cpu',
    LAB_CPU,
  ]);
  expect(args).toEqual(
    expect.arrayContaining([
      '-device',
      'intel-iommu,intremap=on,caching-mode=on',
      '-kernel',
      '/k',
      '-initrd',
      '/i',
    ]),
  );
  expect(args[args.indexOf('-append') + 1]).toMatch(/^console=ttyS0 intel_iommu=on .* rdinit=\/init foo=1$/);
  const tail = args.slice(args.indexOf('edu,addr=03.0'));
  expect(tail).toEqual([
    'edu,addr=03.0',
    '-object',
    'x',
    '-fsdev',
    'local,id=hostfs,path=/,security_model=none,readonly=on,multidevs=remap',
    '-device',
    'virtio-9p-pci,fsdev=hostfs,mount_tag=host,addr=10.0',
    '-fsdev',
    'local,id=labfs,path=/c/run,,1,security_model=none',
    '-device',
    'virtio-9p-pci,fsdev=labfs,mount_tag=lab,addr=11.0',
  ]);
});

test('QEMU: as many vCPUs as asked', () => {
  const args = qemuArgs(layout('edu'), {
    qemu: 'qemu-system-x86_64',
    kernel: '/k',
    initramfs: '/i',
    runDir: '/c/run',
    memoryMiB: 2048,
    cpus: 2,
    append: '',
    extra: [],
  });
  expect(args.slice(args.indexOf('-smp'), args.indexOf('-smp') + 2)).toEqual(['-smp', '2']);
});

test('shQuote: bash reads every word back as it was', () => {
  const words = ['plain', 'two words', "it's", 'a "b" $c `d` \\e', '', '*', 'x=y,z'];
  const r = spawnSync('bash', ['-c', `printf '%s\\0' ${words.map(shQuote).join(' ')}`], { encoding: 'utf8' });
  expect(r.stdout.split('\0').slice(0, -1)).toEqual(words);
});

test("the command script: the lab's environment, the user's, the directory, the command through a pipe", () => {
  const script = commandScript({
    argv: ['npx', 'jest', "it's"],
    cwd: '/work/my project',
    env: { VFIO_BRIDGE_HIL_DEVICES: 'nvme=0000:00:03.0', CI: 'true' },
    path: '/usr/bin:/bin',
  });
  expect(script.split('\n')).toEqual([
    'set -e',
    'export HOME=/tmp/home XDG_CACHE_HOME=/tmp/cache TMPDIR=/tmp',
    'export PATH=/usr/bin:/bin',
    'export VFIO_BRIDGE_HIL_DEVICES=nvme=0000:00:03.0',
    'export CI=true',
    'mkdir -p "$HOME" "$XDG_CACHE_HOME"',
    "cd '/work/my project'",
    'set +e',
    `( npx jest 'it'\\''s' ) 2>&1 | cat`,
    'exit "${PIPESTATUS[0]}"',
    '',
  ]);
  expect(spawnSync('bash', ['-n'], { input: script }).status).toBe(0);
});

test("the guest's plan: devices to bind and to find on their drivers, the run directory, what to keep over /tmp", () => {
  const l = layout('nvme,file=/tmp/disk.img', 'virtio-rng-pci', 'e1000,driver=e1000', 'blocker');
  const keep = keptPaths(l, '/tmp/proj');
  expect(keep).toEqual(['/tmp/proj', '/tmp/disk.img']);
  const plan = guestPlan(l, '/c/run.1', [...keep, '/home/me/kernel'], 600);
  fs.writeFileSync(path.join(tmp, 'env'), plan);
  const r = spawnSync(
    'sh',
    [
      '-c',
      '. ./env; printf "%s|" "$LAB_DEVICES" "$LAB_KERNEL_DEVICES" "$LAB_RUN_DIR" "$LAB_KEEP" "$LAB_TIMEOUT"',
    ],
    { cwd: tmp, encoding: 'utf8' },
  );
  expect(r.stdout).toBe(
    'nvme=1b36:0010@0000:00:03.0 virtio-rng-pci=*@0000:00:04.0|e1000=8086:100e@0000:00:05.0|/c/run.1|/tmp/proj\n/tmp/disk.img|600|',
  );
});

/** The files of a newc archive: name, mode and data. */
function unpackNewc(b: Buffer): { name: string; mode: number; data: Buffer }[] {
  const out = [];
  let at = 0;
  for (;;) {
    expect(b.toString('latin1', at, at + 6)).toBe('070701');
    const field = (i: number) => parseInt(b.toString('latin1', at + 6 + 8 * i, at + 14 + 8 * i), 16);
    const [mode, size, nameSize] = [field(1), field(6), field(11)];
    const name = b.toString('latin1', at + 110, at + 110 + nameSize - 1);
    at = Math.ceil((at + 110 + nameSize) / 4) * 4;
    if (name === 'TRAILER!!!') return out;
    out.push({ name, mode, data: b.subarray(at, at + size) });
    at = Math.ceil((at + size) / 4) * 4;
  }
}

test('newc: headers, names and data padded to 4 bytes, directories and files with their modes, a trailer', () => {
  const files = unpackNewc(
    newcArchive([
      { name: 'bin' },
      { name: 'bin/x', data: Buffer.from('hello'), mode: 0o755 },
      { name: 'e', data: Buffer.alloc(0) },
    ]),
  );
  expect(files.map((f) => [f.name, f.mode.toString(8), f.data.toString()])).toEqual([
    ['bin', '40755', ''],
    ['bin/x', '100755', 'hello'],
    ['e', '100644', ''],
  ]);
  const cpio = spawnSync('cpio', ['-t'], {
    input: newcArchive([{ name: 'a', data: Buffer.from('1') }]),
    encoding: 'utf8',
  });
  if (!cpio.error) expect(cpio.stdout).toBe('a\n');
});

/** A host kernel 6.1.0 on fake modules under tmp/k, with a busybox and an init.sh beside it. */
function hostTree(): { mods: string; kernel: KernelTree } {
  const mods = fakeKernel(path.join(tmp, 'k'), '6.1.0');
  const kernel: KernelTree = {
    source: 'host',
    version: '6.1.0',
    vmlinuz: path.join(tmp, 'k/boot/vmlinuz-6.1.0'),
    modulesDir: mods,
    config: null,
  };
  fs.writeFileSync(path.join(tmp, 'busybox'), 'busybox!');
  fs.writeFileSync(path.join(tmp, 'init.sh'), '#!/bin/busybox sh\n');
  return { mods, kernel };
}

test('the initramfs: busybox, /init, the modules with their dependencies decompressed, the load order; keyed by its inputs', () => {
  const { mods, kernel } = hostTree();
  const inputs = {
    kernel,
    modules: ['kvm-amd', 'virtio_pci'],
    init: path.join(tmp, 'init.sh'),
    busybox: path.join(tmp, 'busybox'),
  };
  const out = initramfsPath(tmp, 'initramfs', inputs);
  expect(path.basename(out)).toMatch(/^initramfs-6\.1\.0-[0-9a-f]{16}\.cpio$/);
  expect(initramfsPath(tmp, 'initramfs', { ...inputs, modules: ['kvm-amd'] })).not.toBe(out);
  expect(buildInitramfs(out, inputs, ModuleIndex.load(mods))).toEqual(['kvm', 'ccp', 'kvm-amd']);
  const files = new Map(unpackNewc(fs.readFileSync(out)).map((f) => [f.name, f]));
  expect([...files.keys()]).toEqual([
    'bin',
    'bin/busybox',
    'init',
    'modules',
    'modules/kvm.ko',
    'modules/ccp.ko',
    'modules/kvm-amd.ko',
    'modules.list',
  ]);
  expect(files.get('modules.list')!.data.toString()).toBe('kvm\nccp\nkvm-amd\n');
  expect(files.get('modules/ccp.ko')!.data.toString('latin1')).toContain('depends=\0'); // gunzipped
  expect(files.get('init')!.mode & 0o777).toBe(0o755);
  expect(() => buildInitramfs(out, { ...inputs, modules: ['nope'] }, ModuleIndex.load(mods))).toThrow(
    expect.objectContaining({ code: 'ELABKERNEL', message: 'the kernel 6.1.0 has no module nope' }),
  );
});

test('building an initramfs names the soft dependencies the kernel lacks', () => {
  const { mods, kernel } = hostTree();
  fs.writeFileSync(
    path.join(mods, 'kernel/drivers/e1000.ko'),
    Buffer.concat([moduleBytes('e1000', []), Buffer.from('softdep=pre: crc-gone\0')]),
  );
  const inputs = {
    kernel,
    modules: ['e1000'],
    init: path.join(tmp, 'init.sh'),
    busybox: path.join(tmp, 'busybox'),
  };
  const said: string[] = [];
  const out = initramfsPath(tmp, 'initramfs', inputs);
  expect(buildInitramfs(out, inputs, ModuleIndex.load(mods), (l) => said.push(l))).toEqual(['e1000']);
  expect(said).toEqual([
    'soft dependencies the kernel does not have, left out as modprobe would: e1000: crc-gone',
  ]);
});

test('a static ELF has no program interpreter', () => {
  expect(isStaticElf(process.execPath)).toBe(false); // node is dynamically linked
  expect(isStaticElf(path.join(tmp, 'nope'))).toBe(false);
  const elf = Buffer.alloc(64 + 56);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2; // ELF64
  elf.writeBigUInt64LE(64n, 0x20); // program headers at 64
  elf.writeUInt16LE(56, 0x36);
  elf.writeUInt16LE(1, 0x38);
  elf.writeUInt32LE(1, 64); // PT_LOAD
  fs.writeFileSync(path.join(tmp, 'static'), elf);
  expect(isStaticElf(path.join(tmp, 'static'))).toBe(true);
  elf.writeUInt32LE(3, 64); // PT_INTERP
  fs.writeFileSync(path.join(tmp, 'dynamic'), elf);
  expect(isStaticElf(path.join(tmp, 'dynamic'))).toBe(false);
});
