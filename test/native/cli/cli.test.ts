import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

import Ajv2020 from 'ajv/dist/2020';

import { formatDumpLines } from '../../../lib/cli/region-access';
import { describeFailure } from '../../../lib/cli/errors';
import { checkHotResetGroups } from '../../../lib/cli/hot-reset';
import { writeOutputFile } from '../../../lib/cli/io';
import { pickIndex } from '../../../lib/cli/irq-watch';
import { SCHEMAS } from '../../../lib/cli/schema';
import { VfioError, type HotResetInfo } from '../../../lib/vfio';
import { ROOT, tempDir } from '../helpers';
import { makeHost } from './fake-host';
import { DEVICES, driverOf, FakeKernel, makeSysfs, PCI_IDS } from '../../support/fake-sysfs';
import { cli, validJson } from '../../support/cli-harness';

let tmp: ReturnType<typeof tempDir>;
let env: NodeJS.ProcessEnv;
let sys: string;
let state: string;

beforeEach(() => {
  tmp = tempDir('vfio-bridge-cli-');
  sys = path.join(tmp.dir, 'sys');
  state = path.join(tmp.dir, 'state', 'drivers.json');
  makeSysfs(sys);
  fs.writeFileSync(path.join(tmp.dir, 'pci.ids'), PCI_IDS);
  fs.writeFileSync(path.join(tmp.dir, 'modules.alias'), ''); // the machine's own would show in list
  env = {
    VFIO_BRIDGE_MODULES_ALIAS: path.join(tmp.dir, 'modules.alias'),
    VFIO_BRIDGE_SYSFS_ROOT: sys,
    VFIO_BRIDGE_STATE: state,
    VFIO_BRIDGE_PCI_IDS: path.join(tmp.dir, 'pci.ids'),
    ...makeHost(tmp.dir),
  };
});
afterEach(() => tmp.remove());

describe('list', () => {
  test('every device, lspci-like, with names, driver, group viability and readiness', async () => {
    const r = await cli(['list'], env);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(DEVICES.length);
    expect(lines[0]).toBe(
      '0000:00:02.0 Ethernet controller [0200]: Intel Corporation 82540EM Gigabit Ethernet Controller [8086:100e] ' +
        'driver e1000, group 3 not viable, eth0 up',
    );
    expect(lines[1]).toContain('driver e1000e, group 12 not viable, eth1 down');
    expect(lines[3]).toContain('[10ec:8139] driver vfio-pci, group 13 viable');
    expect(lines[4]).toBe('0000:00:05.0 Class [0604]: Device [1b36:0001] driver none, no IOMMU group');
  });

  test('--json follows its schema and carries the same facts', async () => {
    const r = await cli(['list', '--json'], env);
    expect(r.code).toBe(0);
    const doc = validJson('list', r.stdout) as { devices: Record<string, unknown>[] };
    expect(doc.devices.map((d) => d.bdf)).toEqual(DEVICES.map((d) => d.bdf));
    expect(doc.devices[3]).toMatchObject({
      vendorId: 0x10ec,
      deviceId: 0x8139,
      vendorName: 'Realtek Semiconductor Co., Ltd.',
      className: 'Ethernet controller',
      driver: 'vfio-pci',
      iommuGroup: 13,
      viable: true,
      vfioReady: false, // no /dev/vfio/13 on this machine
    });
    expect(doc.devices[2]).toMatchObject({ className: 'Audio device', deviceName: null, viable: false });
  });

  test('filters: BDF, vendor:device, class, driver', async () => {
    const bdfs = async (...args: string[]) => {
      const r = await cli(['list', '--json', ...args], env);
      expect(r.code).toBe(0);
      return (validJson('list', r.stdout) as { devices: { bdf: string }[] }).devices.map((d) => d.bdf);
    };
    expect(await bdfs('00:03.1', '0000:00:04.0')).toEqual(['0000:00:03.1', '0000:00:04.0']);
    expect(await bdfs('--id', '8086:')).toEqual(['0000:00:02.0', '0000:00:03.0', '0000:00:03.1']);
    expect(await bdfs('--id', ':8139')).toEqual(['0000:00:04.0']);
    expect(await bdfs('--class', '0200')).toEqual(['0000:00:02.0', '0000:00:03.0', '0000:00:04.0']);
    expect(await bdfs('--class', '06')).toEqual(['0000:00:05.0']);
    expect(await bdfs('--driver', 'none')).toEqual(['0000:00:05.0']);
    expect(await bdfs('--driver', 'e1000e', '--class', '02')).toEqual(['0000:00:03.0']);
  });

  test('bad filters are usage errors', async () => {
    for (const args of [['--id', 'intel'], ['--class', 'net'], ['00:3.0']]) {
      const r = await cli(['list', ...args], env);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^vfio-bridge: .*(is not vvvv:dddd|is not cc, ccss|is not a PCI address)/);
    }
  });
});

describe('bind, unbind, restore on the fake kernel', () => {
  let kernel: FakeKernel;
  beforeEach(() => {
    kernel = new FakeKernel(sys);
  });
  afterEach(() => kernel.stop());

  test('refuses a device whose group would not be viable, with the reason and the fix, touching nothing', async () => {
    const r = await cli(['bind', '0000:00:03.0'], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(
      'vfio-bridge: binding 0000:00:03.0 to vfio-pci would leave IOMMU group 12 not viable: 0000:00:03.1 is on snd_hda_intel',
    );
    expect(r.stderr).toMatch(/hint: .*Pass --group to bind the whole group, or bind 0000:00:03.1 as well/);
    expect(r.stderr).toMatch(/\[ENOTVIABLE\]/);
    expect(driverOf(sys, '0000:00:03.0')).toBe('e1000e');
    expect(fs.readFileSync(path.join(sys, 'bus/pci/devices/0000:00:03.0/driver_override'), 'utf8')).toBe(
      '(null)\n',
    );
    expect(fs.existsSync(state)).toBe(false);
  });

  test('--group binds the whole group with progress, and restore puts both back', async () => {
    const r = await cli(['bind', '--group', '--json', '0000:00:03.0'], env);
    expect(r.stderr).toBe('bind [1/2] 0000:00:03.0\nbind [2/2] 0000:00:03.1\n');
    expect(r.code).toBe(0);
    const doc = validJson('bind', r.stdout);
    expect(doc.devices).toEqual([
      { bdf: '0000:00:03.0', from: 'e1000e', to: 'vfio-pci', changed: true },
      { bdf: '0000:00:03.1', from: 'snd_hda_intel', to: 'vfio-pci', changed: true },
    ]);
    expect(driverOf(sys, '0000:00:03.0')).toBe('vfio-pci');
    expect(driverOf(sys, '0000:00:03.1')).toBe('vfio-pci');
    const saved = JSON.parse(fs.readFileSync(state, 'utf8'));
    expect(saved.version).toBe(1);
    expect(saved.devices['0000:00:03.0']).toMatchObject({ driver: 'e1000e', driverOverride: null });

    const back = await cli(['restore', '--json', '0000:00:03.0', '0000:00:03.1'], env);
    expect(back.code).toBe(0);
    expect(validJson('restore', back.stdout).devices).toEqual([
      { bdf: '0000:00:03.0', from: 'vfio-pci', to: 'e1000e', changed: true },
      { bdf: '0000:00:03.1', from: 'vfio-pci', to: 'snd_hda_intel', changed: true },
    ]);
    expect(driverOf(sys, '0000:00:03.0')).toBe('e1000e');
    expect(fs.readFileSync(path.join(sys, 'bus/pci/devices/0000:00:03.0/driver_override'), 'utf8')).toBe(
      '\n',
    );
    expect(JSON.parse(fs.readFileSync(state, 'utf8')).devices).toEqual({});
  });

  test('refuses a network interface that is up unless --force', async () => {
    const r = await cli(['bind', '0000:00:02.0'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('0000:00:02.0 is in use by the host: network interface eth0 is up');
    expect(r.stderr).toContain('ip link set eth0 down');
    expect(r.stderr).toContain('--force');
    expect(driverOf(sys, '0000:00:02.0')).toBe('e1000');
    const forced = await cli(['bind', '--force', '0000:00:02.0'], env);
    expect(forced.code).toBe(0);
    expect(forced.stdout).toBe('0000:00:02.0: e1000 -> vfio-pci\n');
    expect(driverOf(sys, '0000:00:02.0')).toBe('vfio-pci');
  });

  test('unbind remembers the first driver; restore goes back to it', async () => {
    expect((await cli(['unbind', '0000:00:04.0'], env)).stdout).toBe('0000:00:04.0: vfio-pci -> no driver\n');
    expect(driverOf(sys, '0000:00:04.0')).toBeNull();
    const again = await cli(['unbind', '--json', '0000:00:04.0'], env);
    expect(validJson('unbind', again.stdout)).toEqual({
      command: 'unbind',
      version: 1,
      stateFile: state,
      devices: [{ bdf: '0000:00:04.0', from: null, to: null, changed: false }],
    });
    const b = await cli(['bind', '--driver', '8139too', '0000:00:04.0'], env);
    expect(b.stdout).toBe('0000:00:04.0: no driver -> 8139too\n');
    const r = await cli(['restore', '0000:00:04.0'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('0000:00:04.0: 8139too -> vfio-pci\n');
    expect(driverOf(sys, '0000:00:04.0')).toBe('vfio-pci');
  });

  test('restore with nothing remembered fails with the reason', async () => {
    const r = await cli(['restore', '0000:00:04.0'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${state} remembers no earlier driver for 0000:00:04.0`);
    expect(r.stderr).toContain('bind --driver NAME');
  });

  test('a driver that is not loaded is refused with the modprobe hint', async () => {
    const r = await cli(['bind', '--driver', 'vfio-nope', '0000:00:04.0'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/there is no PCI driver vfio-nope[\s\S]*modprobe vfio-nope/);
  });
});

test('bind waits for the kernel and gives up after --timeout', async () => {
  // No fake kernel: nothing answers the probe.
  const t0 = Date.now();
  const r = await cli(['bind', '--timeout', '60', '0000:00:04.0', '--driver', '8139too'], env);
  expect(r.code).toBe(1);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(60);
  expect(r.stderr).toContain('0000:00:04.0 did not bind to 8139too within 60 ms (driver now: vfio-pci)');
  expect(r.stderr).toContain('[ETIMEDOUT]');
});

describe('argument errors exit 2 with the reason', () => {
  const cases: [string, string[], RegExp][] = [
    ['a bad BDF', ['read', '00:3.0', 'bar0', '0', '-w', '4'], /"00:3.0" is not a PCI address/],
    [
      'a bad width',
      ['read', '00:04.0', 'bar1', '0', '-w', '3'],
      /argument '3' is invalid. Allowed choices are 1, 2, 4, 8/,
    ],
    ['no width', ['dump', '00:04.0', 'bar1'], /required option '-w, --width <bytes>' not specified/],
    [
      'an offset past the region',
      ['read', '00:04.0', 'bar1', '0x100', '-w', '4'],
      /offset 0x100 \+ 4 bytes is past the end of bar1 \(size 0x100\)/,
    ],
    [
      'an offset past config space',
      ['dump', '00:04.0', 'config', '0xf0', '0x20', '-w', '4'],
      /past the end of config \(size 0x100\)/,
    ],
    [
      'a value too wide',
      ['write', '00:04.0', 'bar1', '0', '0x1ff', '-w', '1', '--yes'],
      /value 0x1ff does not fit in 1 byte \(max 0xff\)/,
    ],
    [
      'a value too wide for 8 bytes',
      ['write', '00:04.0', 'bar1', '0', '0x10000000000000000', '-w', '8', '--yes'],
      /does not fit in 8 bytes/,
    ],
    [
      'an offset not a multiple of the width',
      ['read', '00:04.0', 'bar1', '0x2', '-w', '4'],
      /offset 0x2 is not a multiple of the width \(4\): the access would be split/,
    ],
    [
      'a dump that starts between two accesses',
      ['dump', '00:04.0', 'config', '0x1', '4', '-w', '2'],
      /offset 0x1 is not a multiple of the width \(2\)/,
    ],
    [
      'a write that is not naturally aligned',
      ['write', '00:04.0', 'bar1', '0x4', '1', '-w', '8', '--yes'],
      /offset 0x4 is not a multiple of the width \(8\)/,
    ],
    ['a region that is not one', ['read', '00:04.0', 'bar9', '0', '-w', '4'], /"bar9" is not a region/],
    ['a BAR the device lacks', ['read', '00:04.0', 'bar3', '0', '-w', '4'], /0000:00:04.0 has no bar3/],
    [
      'a length that is not whole accesses',
      ['dump', '00:04.0', 'bar1', '0', '6', '-w', '4'],
      /length 6 is not a positive multiple of the width \(4\)/,
    ],
    ['an unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
    ['a missing argument', ['info'], /missing required argument 'bdf'/],
    ['a bad --bar', ['mtree', '00:04.0', '--bar', 'zero=1'], /--bar "zero=1" is not \[BDF\/\]n=ADDR/],
    [
      'a --bar for a BAR the device lacks',
      ['mtree', '00:04.0', '--bar', '3=0x1000'],
      /0000:00:04.0 has no BAR 3/,
    ],
    [
      'a --bar address the BAR register would mask',
      ['mtree', '00:04.0', '--bar', '1=0xfeb00080'],
      /BAR 1 of 0000:00:04.0 is 0x100 bytes, so its address must be a multiple of that/,
    ],
    [
      'a 32-bit BAR placed above 4 GiB',
      ['mtree', '00:04.0', '--bar', '1=0x100000000'],
      /BAR 1 of 0000:00:04.0 is a 32-bit BAR and must end at or below 0x100000000/,
    ],
    [
      'an I/O BAR placed past the I/O space',
      ['mtree', '00:04.0', '--bar', '0=0x10000'],
      /BAR 0 of 0000:00:04.0 is an I\/O BAR and must end at or below 0x10000/,
    ],
    [
      'a write nobody confirmed',
      ['write', '00:04.0', 'bar1', '0', '1', '-w', '1'],
      /a write needs --yes when nobody can confirm it/,
    ],
  ];
  test.each(cases)('%s', async (_name, argv, message) => {
    const r = await cli(argv, env);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(2);
  });

  test('a write the operator declines is not made', async () => {
    const r = await cli(['write', '00:04.0', 'bar1', '0', '1', '-w', '1'], env, false);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/write cancelled/);
  });

  test('a device that does not exist is an operation failure (exit 1)', async () => {
    const r = await cli(['info', '0000:00:1f.7'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /no PCI device 0000:00:1f.7 in .*\n {2}hint: list the devices with `vfio-bridge list`/,
    );
  });
});

describe('reset --hot and irqs --watch: what can be checked without the kernel', () => {
  test('watch options without --watch, and bad counts, are usage errors', async () => {
    for (const [argv, msg] of [
      [['irqs', '00:04.0', '--samples', '3'], /--samples needs --watch/],
      [['irqs', '00:04.0', '--interval', '10'], /--interval needs --watch/],
      [['irqs', '00:04.0', '--irq', 'msi'], /--irq needs --watch/],
      [['irqs', '00:04.0', '--watch', '--interval', '0'], /--interval must be between 1 and/],
      // A bad value is named as such with or without --watch.
      [['irqs', '00:04.0', '--interval', '0'], /--interval must be between 1 and/],
      [['irqs', '00:04.0', '--interval', 'soon'], /--interval "soon" is not a non-negative integer/],
      [['irqs', '00:04.0', '--samples', '-1'], /--samples "-1" is not a non-negative integer/],
      [['irqs', '00:04.0', '--watch', '--samples', 'many'], /--samples "many" is not a non-negative integer/],
      [['irqs', '00:04.0', '--watch', '--irq', 'msi-x'], /argument 'msi-x' is invalid/],
    ] as const) {
      const r = await cli([...argv], env);
      expect({ argv, code: r.code }).toEqual({ argv, code: 2 });
      expect(r.stderr).toMatch(msg);
    }
  });

  test('a device that does not exist fails before anything is opened', async () => {
    for (const argv of [
      ['reset', '--hot', '00:1f.7'],
      ['irqs', '--watch', '00:1f.7'],
    ]) {
      const r = await cli(argv, env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/no PCI device 0000:00:1f.7/);
    }
  });

  const info = (groups: [string, number][]): HotResetInfo => ({
    flags: 0,
    devices: groups.map(([bdf, group]) => ({ bdf, group, segment: 0, bus: 0, devfn: 0 })),
    groups: [...new Set(groups.map(([, g]) => g))],
  });

  test('hot reset refuses groups that are not viable or not on vfio-pci, naming each with the fix', () => {
    const opts = { sysfsRoot: sys };
    expect(() => checkHotResetGroups('0000:00:04.0', info([['0000:00:04.0', 13]]), opts)).not.toThrow();
    let err: unknown;
    try {
      checkHotResetGroups(
        '0000:00:04.0',
        info([
          ['0000:00:04.0', 13],
          ['0000:00:03.0', 12],
          ['0000:00:03.1', 12],
          ['0000:00:02.0', 3],
        ]),
        opts,
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VfioError);
    const e = err as VfioError;
    expect(e.code).toBe('EGROUPS');
    expect(e.message).toContain(
      'group 12 (not viable: 0000:00:03.0 is on e1000e, 0000:00:03.1 is on snd_hda_intel)',
    );
    expect(e.message).toContain('group 3 (not viable: 0000:00:02.0 is on e1000)');
    expect(e.message).not.toContain('group 13');
    expect(e.hint).toContain(
      '`vfio-bridge bind --group 0000:00:03.0`, `vfio-bridge bind --group 0000:00:02.0`',
    );
  });

  test('a group with no device on vfio-pci has no node to open, and is refused as such', () => {
    // The PCI bridge's function has no driver: a viable group, but nothing bound to vfio-pci.
    fs.mkdirSync(path.join(sys, 'kernel/iommu_groups/40/devices'), { recursive: true });
    fs.symlinkSync(
      path.join(sys, 'bus/pci/devices/0000:00:05.0'),
      path.join(sys, 'kernel/iommu_groups/40/devices/0000:00:05.0'),
    );
    expect(() =>
      checkHotResetGroups('0000:00:04.0', info([['0000:00:05.0', 40]]), { sysfsRoot: sys }),
    ).toThrow(/group 40 \(no device of it is bound to vfio-pci, so it has no \/dev\/vfio node to open\)/);
  });

  test('the watched interrupt: MSI-X, then MSI, then INTx; a missing one is refused', () => {
    const counts = (c: number[]) => (i: number) => c[i] ?? 0;
    expect(pickIndex('b', 'auto', counts([1, 1, 5]))).toBe(2);
    expect(pickIndex('b', 'auto', counts([1, 1, 0]))).toBe(1);
    expect(pickIndex('b', 'auto', counts([1, 0, 0]))).toBe(0);
    expect(pickIndex('b', 'intx', counts([1, 1, 5]))).toBe(0);
    expect(() => pickIndex('b', 'msix', counts([1, 1, 0]))).toThrow(/b has no msix interrupt/);
    expect(() => pickIndex('b', 'auto', counts([0, 0, 0, 1, 1]))).toThrow(/no INTx, MSI or MSI-X/);
  });

  test('the schemas take what the commands print', () => {
    const hot = {
      command: 'reset',
      version: 1,
      bdf: '0000:01:00.0',
      method: 'hot',
      flags: 0,
      devices: [{ bdf: '0000:01:00.0', group: 9 }],
      groups: [9],
    };
    expect(validJson('reset', JSON.stringify(hot))).toEqual(hot);
    expect(() => validJson('reset', JSON.stringify({ ...hot, method: 'function' }))).toThrow(
      /breaks its schema/,
    );
    const line = {
      command: 'irqs',
      version: 1,
      bdf: '0000:00:03.0',
      irq: 'msi',
      index: 1,
      sample: 1,
      elapsedMs: 1000,
      counts: [3],
      totals: [3],
      stop: null,
    };
    expect(validJson('irqs-watch', JSON.stringify(line))).toEqual(line);
    expect(() => validJson('irqs-watch', JSON.stringify({ ...line, stop: 'done' }))).toThrow(
      /breaks its schema/,
    );
  });
});

describe('help, schemas and the executable', () => {
  test('every command has --help with an example and --json', async () => {
    for (const c of [
      'list',
      'bind',
      'unbind',
      'restore',
      'info',
      'read',
      'write',
      'dump',
      'mtree',
      'reset',
      'irqs',
      'lab',
    ]) {
      const r = await cli([c, '--help'], env);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`Usage: vfio-bridge ${c} `));
      expect(r.stdout).toMatch(/Examples?:\n {2}\$ vfio-bridge /);
      expect(r.stdout).toContain('--json');
    }
  });

  test('every schema compiles, and `schema` prints it', async () => {
    const ajv = new Ajv2020({ strict: true });
    for (const [name, s] of Object.entries(SCHEMAS)) {
      ajv.compile(s);
      const r = await cli(['schema', name], env);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual(s);
    }
    expect((await cli(['schema', 'nope'], env)).code).toBe(2);
  });

  test('the bin exits 2 on a usage error and 1 on a failure', () => {
    const bin = ['-r', '@swc-node/register', path.join(ROOT, 'lib/cli/main.ts')];
    const opts = { env: { ...process.env, ...env }, encoding: 'utf8' as const, cwd: ROOT };
    const usage = spawnSync(process.execPath, [...bin, 'read', 'x', 'bar0', '0', '-w', '4'], opts);
    expect(usage.stderr).toMatch(/"x" is not a PCI address/);
    expect(usage.status).toBe(2);
    const failed = spawnSync(process.execPath, [...bin, 'restore', '00:04.0'], opts);
    expect(failed.stderr).toMatch(/remembers no earlier driver/);
    expect(failed.status).toBe(1);
    const ok = spawnSync(process.execPath, [...bin, 'list', '--driver', 'none'], opts);
    expect(ok.stdout).toContain('0000:00:05.0');
    expect(ok.status).toBe(0);
  });
});

describe('the dump format', () => {
  test('QEMU xp-like lines: offset, values at the width, ASCII of the little-endian bytes', () => {
    expect(formatDumpLines(0x10, 4, [0x64636261, 0x00000041, 0xffffffff, 0x7e202020, 0x31])).toBe(
      '00000010: 0x64636261 0x00000041 0xffffffff 0x7e202020  |abcdA.......   ~|\n' +
        '00000020: 0x00000031                                   |1...|\n',
    );
    expect(formatDumpLines(0, 8, [0x4847464544434241n, 0n])).toBe(
      '00000000: 0x4847464544434241 0x0000000000000000  |ABCDEFGH........|\n',
    );
    expect(formatDumpLines(0, 1, [0x41, 0x0a])).toMatch(/^00000000: 0x41 0x0a {2,}\|A\.\|\n$/);
  });
});

describe('files the operator names', () => {
  test('an SVG that cannot be written is a typed failure with the path and a hint (exit 1)', () => {
    const missing = path.join(tmp.dir, 'no-such-dir', 'map.svg');
    for (const [file, code, hint] of [
      [missing, 'ENOENT', `${path.dirname(missing)} does not exist: create it`],
      [tmp.dir, 'EISDIR', `${tmp.dir} is a directory: name a file, e.g. ${path.join(tmp.dir, 'map.svg')}`],
    ]) {
      const e = (() => {
        try {
          writeOutputFile(file, '<svg/>', 'the SVG');
        } catch (x) {
          return x;
        }
        throw new Error(`writing ${file} did not fail`);
      })() as VfioError;
      expect(e).toBeInstanceOf(VfioError);
      expect(e).toMatchObject({ code, op: 'write', path: file });
      expect(e.errno).toBeLessThan(0);
      expect(e.hint).toContain(hint);
      const { code: exit, text } = describeFailure(e);
      expect(exit).toBe(1);
      expect(text).toContain(`cannot write the SVG to ${file}: ${code}`);
      expect(text).toContain(`hint: ${hint}`);
    }
    const ok = path.join(tmp.dir, 'map.svg');
    writeOutputFile(ok, '<svg/>', 'the SVG');
    expect(fs.readFileSync(ok, 'utf8')).toBe('<svg/>');
  });

  test('an empty --svg is a usage error before any device is opened', async () => {
    const r = await cli(['mtree', '00:04.0', '--svg', ''], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /--svg needs a file name \[EUSAGE\]\n {2}hint: vfio-bridge mtree 00:04.0 --svg map.svg/,
    );
  });
});

test('a sysfs attribute that cannot be read is a typed failure naming the file (exit 1)', async () => {
  const vendor = path.join(sys, 'bus/pci/devices/0000:00:04.0/vendor');
  fs.rmSync(vendor);
  fs.mkdirSync(vendor);
  const r = await cli(['list', '0000:00:04.0'], env);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`cannot read ${vendor}: EISDIR`);
  expect(r.stderr).toContain('[EISDIR]');
});
