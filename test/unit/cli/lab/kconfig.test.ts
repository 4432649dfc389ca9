// The lab's own kernel, short of building it: the fragment read and merged, the check that every
// setting survived olddefconfig (and the Kconfig dependencies named when one did not), the cache
// key, the cached builds `auto` finds, and the build tools a host lacks.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  annotate,
  buildKey,
  checkConfig,
  configValues,
  explainMismatches,
  mergeFragment,
  missingConfig,
  parseFragment,
  type FragmentEntry,
} from '../../../../lib/cli/lab/kconfig';
import {
  cachedBuiltKernel,
  cachedBuilds,
  compareDebianVersions,
  formatSeconds,
  KERNEL_BASE,
  KERNEL_FRAGMENT,
  KERNEL_RECIPE,
  readFragment,
  type BuildRecord,
} from '../../../../lib/cli/lab/kbuild';
import {
  BUILD_TOOLS,
  childCpuSeconds,
  ensureBuildTools,
  missingBuildTools,
  tail,
} from '../../../../lib/cli/lab/kbuild-tools';
import { fakeKernel } from './fake-kernel';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-kconfig-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const FRAGMENT = [
  '# a comment',
  '',
  'CONFIG_IOMMUFD=y',
  'CONFIG_VFIO=m',
  '# CONFIG_IOMMUFD_VFIO_CONTAINER is not set',
  'CONFIG_LOCALVERSION="-lab"',
  'CONFIG_HZ=250',
].join('\n');

describe('the fragment', () => {
  test('settings with their lines; "is not set" is n; comments and blank lines skipped', () => {
    expect(parseFragment(FRAGMENT)).toEqual([
      { symbol: 'CONFIG_IOMMUFD', value: 'y', line: 3 },
      { symbol: 'CONFIG_VFIO', value: 'm', line: 4 },
      { symbol: 'CONFIG_IOMMUFD_VFIO_CONTAINER', value: 'n', line: 5 },
      { symbol: 'CONFIG_LOCALVERSION', value: '"-lab"', line: 6 },
      { symbol: 'CONFIG_HZ', value: '250', line: 7 },
    ]);
  });

  test.each([
    ['IOMMUFD=y', /line 1: "IOMMUFD=y" is not a config line/],
    ['CONFIG_X y', /is not a config line/],
    ['CONFIG_X=', /line 1: CONFIG_X= has no value/],
    ['CONFIG_X=n', /CONFIG_X=n/],
    ['CONFIG_X=y\nCONFIG_X=m', /line 2: CONFIG_X is set again \(first on line 1\)/],
  ])('%j is refused, naming the line', (text, why) => {
    expect(() => parseFragment(text, 'f.config')).toThrow(
      expect.objectContaining({ code: 'EKCONFIG', message: expect.stringMatching(why) }),
    );
  });

  test("the package's fragment asks for both VFIO backends, device cdevs, mdev and mtty", () => {
    const got = new Map(readFragment().map((e) => [e.symbol, e.value]));
    expect(
      Object.fromEntries(
        [
          'IOMMUFD',
          'VFIO_DEVICE_CDEV',
          'VFIO_CONTAINER',
          'IOMMUFD_VFIO_CONTAINER',
          'VFIO_MDEV',
          'SAMPLES',
          'SAMPLE_VFIO_MDEV_MTTY',
          'INTEL_IOMMU',
          'IRQ_REMAP',
          'VFIO_PCI',
          'KVM_AMD',
          'IKCONFIG_PROC',
        ].map((s) => [s, got.get(`CONFIG_${s}`)]),
      ),
    ).toEqual({
      IOMMUFD: 'y',
      VFIO_DEVICE_CDEV: 'y',
      VFIO_CONTAINER: 'y',
      IOMMUFD_VFIO_CONTAINER: 'n',
      VFIO_MDEV: 'm',
      SAMPLES: 'y',
      SAMPLE_VFIO_MDEV_MTTY: 'm',
      INTEL_IOMMU: 'y',
      IRQ_REMAP: 'y',
      VFIO_PCI: 'm',
      KVM_AMD: 'm',
      IKCONFIG_PROC: 'y',
    });
    expect(path.basename(KERNEL_FRAGMENT)).toBe('lab.config');
  });

  test("merged into a base: the base's lines for its symbols go, its settings come after (a choice takes the last)", () => {
    const base = [
      'CONFIG_A=y',
      '# CONFIG_IOMMUFD is not set',
      'CONFIG_VFIO=y',
      '# CONFIG_B is not set',
      '',
    ].join('\n');
    expect(mergeFragment(base, parseFragment(FRAGMENT))).toBe(
      [
        'CONFIG_A=y',
        '# CONFIG_B is not set',
        'CONFIG_IOMMUFD=y',
        'CONFIG_VFIO=m',
        '# CONFIG_IOMMUFD_VFIO_CONTAINER is not set',
        'CONFIG_LOCALVERSION="-lab"',
        'CONFIG_HZ=250',
        '',
      ].join('\n'),
    );
  });
});

describe('the check after olddefconfig', () => {
  const entries = parseFragment(FRAGMENT);

  test('a config with every setting passes; "is not set" and absent are both unset', () => {
    const config = configValues(
      ['CONFIG_IOMMUFD=y', 'CONFIG_VFIO=m', 'CONFIG_LOCALVERSION="-lab"', 'CONFIG_HZ=250'].join('\n'),
    );
    expect(checkConfig(entries, config)).toEqual([]);
  });

  test('every dropped or changed setting is named, with what it became', () => {
    const config = configValues(
      [
        '# CONFIG_IOMMUFD is not set',
        'CONFIG_VFIO=y',
        'CONFIG_IOMMUFD_VFIO_CONTAINER=y',
        'CONFIG_LOCALVERSION=""',
        'CONFIG_HZ=250',
      ].join('\n'),
    );
    expect(checkConfig(entries, config)).toEqual([
      { symbol: 'CONFIG_IOMMUFD', wanted: 'y', got: 'n', line: 3 },
      { symbol: 'CONFIG_VFIO', wanted: 'm', got: 'y', line: 4 },
      { symbol: 'CONFIG_IOMMUFD_VFIO_CONTAINER', wanted: 'n', got: 'y', line: 5 },
      { symbol: 'CONFIG_LOCALVERSION', wanted: '"-lab"', got: '""', line: 6 },
    ]);
  });

  test("the explanation names each symbol's dependencies, with their values, from the Kconfig sources", () => {
    fs.mkdirSync(path.join(tmp, 'drivers/vfio'), { recursive: true });
    fs.writeFileSync(
      path.join(tmp, 'drivers/vfio/Kconfig'),
      [
        'menuconfig VFIO',
        '\ttristate "VFIO"',
        'if VFIO',
        'config VFIO_DEVICE_CDEV',
        '\tbool "cdev"',
        '\tdepends on IOMMUFD && !SPAPR_TCE_IOMMU',
        '\thelp',
        '\t  Its help text: a line that',
        '\t  depends on NOTHING must not count.',
        '',
        '\t  Nor after a blank line.',
        'endif',
        'config LONELY',
        '\tbool',
        'config PICKY',
        '\tbool "picky"',
        '\tselect LONELY',
        'config IDLE',
        '\tbool',
        '\tselect LONELY',
        '',
      ].join('\n'),
    );
    const config = configValues('CONFIG_VFIO=m\nCONFIG_PICKY=y\nCONFIG_LONELY=y\n');
    const lines = explainMismatches(
      [
        { symbol: 'CONFIG_VFIO_DEVICE_CDEV', wanted: 'y', got: 'n', line: 7 },
        { symbol: 'CONFIG_LONELY', wanted: 'n', got: 'y', line: 8 },
        { symbol: 'CONFIG_PICKY', wanted: 'm', got: 'y', line: 9 },
        { symbol: 'CONFIG_NOWHERE', wanted: 'm', got: 'n', line: 10 },
      ],
      config,
      tmp,
    );
    expect(lines).toEqual([
      'CONFIG_VFIO_DEVICE_CDEV=y (line 7) ended up not set: depends on VFIO [=m] && IOMMUFD [=n] && ' +
        '!SPAPR_TCE_IOMMU [=n] (drivers/vfio/Kconfig)',
      'CONFIG_LONELY=n (line 8) ended up y: selected by PICKY [=y] (drivers/vfio/Kconfig)',
      'CONFIG_PICKY=m (line 9) ended up y (drivers/vfio/Kconfig; no dependencies: a choice or a select decided)',
      "CONFIG_NOWHERE=m (line 10) ended up not set: no such symbol in this kernel's Kconfig",
    ]);
    expect(explainMismatches([{ symbol: 'CONFIG_X', wanted: 'y', got: 'm', line: 1 }], config, null)).toEqual(
      ['CONFIG_X=y (line 1) ended up m'],
    );
    expect(annotate('PCI && (X86 || m)', configValues('CONFIG_PCI=y'))).toBe('PCI [=y] && (X86 [=n] || m)');
    expect(annotate('8139CP || X86_64 || 250', configValues('CONFIG_8139CP=m'))).toBe(
      '8139CP [=m] || X86_64 [=n] || 250',
    );
    expect(annotate('(AGP || AGP=n) && X != y', configValues('CONFIG_AGP=m'))).toBe(
      '(AGP [=m] || AGP=n [AGP=m]) && X != y [X=n]',
    );
  });
});

describe('the cache key', () => {
  const entries = parseFragment(FRAGMENT);
  const k = { sourceVersion: '6.12.118-1~deb12u1', base: 'tinyconfig', entries, recipe: 1 };

  test('16 hex digits, the same for the same inputs, whatever the comments and the order of lines', () => {
    expect(buildKey(k)).toMatch(/^[0-9a-f]{16}$/);
    const reordered = parseFragment(`# another comment\n${FRAGMENT.split('\n').reverse().join('\n')}`);
    expect(buildKey({ ...k, entries: reordered })).toBe(buildKey(k));
  });

  test.each([
    ['the source version', { sourceVersion: '6.12.119-1~deb12u1' }],
    ['the base', { base: 'defconfig' }],
    ['the recipe', { recipe: 2 }],
    ['a setting', { entries: parseFragment(FRAGMENT.replace('CONFIG_VFIO=m', 'CONFIG_VFIO=y')) }],
    ['one more setting', { entries: parseFragment(`${FRAGMENT}\nCONFIG_E1000=m`) }],
  ])('changes with %s', (_what, change) => {
    expect(buildKey({ ...k, ...change })).not.toBe(buildKey(k));
  });
});

describe('cached builds', () => {
  /** A built kernel in the cache as kbuild.ts installs one. */
  function cached(
    cache: string,
    version: string,
    entries: readonly FragmentEntry[],
    over: Partial<BuildRecord> = {},
  ): string {
    const key = buildKey({ sourceVersion: version, base: KERNEL_BASE, entries, recipe: KERNEL_RECIPE });
    const release = `${version.split('-')[0]}-vfio-lab`;
    const dir = path.join(cache, `linux-built-${release}-${key}`);
    fakeKernel(dir, release);
    const record: BuildRecord = {
      key,
      sourceVersion: version,
      base: KERNEL_BASE,
      recipe: KERNEL_RECIPE,
      release,
      seconds: 700,
      cpuSeconds: 1300,
      sourceSeconds: 40,
      jobs: 2,
      at: '2026-01-01T00:00:00.000Z',
      ...over,
    };
    fs.writeFileSync(path.join(dir, 'build.json'), JSON.stringify(record));
    fs.writeFileSync(path.join(dir, '.complete'), '');
    return dir;
  }

  test('those of the current fragment, newest source first; others, unfinished ones and old recipes are not', () => {
    const fragment = path.join(tmp, 'lab.config');
    fs.writeFileSync(fragment, FRAGMENT);
    const entries = parseFragment(FRAGMENT);
    const cache = path.join(tmp, 'cache');
    expect(cachedBuiltKernel(cache, fragment)).toBe(
      `no lab kernel is built for lab.config in ${cache} (--kernel built builds one)`,
    );
    cached(cache, '6.12.57-1~deb12u1', entries);
    const newest = cached(cache, '6.12.118-1~deb12u1', entries);
    cached(cache, '6.12.200-1~deb12u1', parseFragment(`${FRAGMENT}\nCONFIG_E1000=m`));
    cached(cache, '6.12.300-1~deb12u1', entries, { recipe: KERNEL_RECIPE + 1 });
    fs.rmSync(path.join(cached(cache, '6.12.400-1~deb12u1', entries), '.complete'));
    expect(cachedBuilds(cache, entries).map((b) => b.record.sourceVersion)).toEqual([
      '6.12.118-1~deb12u1',
      '6.12.57-1~deb12u1',
    ]);
    const b = cachedBuiltKernel(cache, fragment);
    expect(b).toMatchObject({
      dir: newest,
      tree: { source: 'built', version: '6.12.118-vfio-lab', package: 'linux-source-6.12' },
    });
  });

  test('Debian versions: numbers as numbers, ~ before anything', () => {
    const sorted = [
      '6.12.118-1~deb12u1',
      '6.12.9-1',
      '6.12.118-1',
      '6.12.57-1~deb12u1',
      '6.12.118-2~deb12u1',
    ].sort(compareDebianVersions);
    expect(sorted).toEqual([
      '6.12.9-1',
      '6.12.57-1~deb12u1',
      '6.12.118-1~deb12u1',
      '6.12.118-1',
      '6.12.118-2~deb12u1',
    ]);
    expect(formatSeconds(754)).toBe('12 min 34 s');
    expect(formatSeconds(42.4)).toBe('42 s');
  });
});

describe('build tools', () => {
  const host = (missing: string[]) => ({ has: (p: string) => !missing.includes(p) });

  test('what a host lacks, by probe', () => {
    expect(missingBuildTools(host([]))).toEqual([]);
    expect(missingBuildTools(host(['flex', '/usr/include/gelf.h'])).map((t) => t.pkg)).toEqual([
      'flex',
      'libelf-dev',
    ]);
    expect(BUILD_TOOLS.map((t) => t.pkg)).toEqual(
      expect.arrayContaining(['gcc', 'make', 'bison', 'bc', 'zstd']),
    );
  });

  test('missing with no apt: exit 3, naming the tools and the packages', () => {
    const said: string[] = [];
    expect(() => ensureBuildTools((l) => said.push(l), host(['bison', 'bc', 'apt-get']))).toThrow(
      expect.objectContaining({
        code: 'ELABPROVISION',
        exitStatus: 3,
        message: expect.stringMatching(
          /building the lab's kernel needs bison, bc, and this host has no apt-get/,
        ),
        hint: 'install bison bc',
      }),
    );
    expect(said).toEqual([]);
    expect(() => ensureBuildTools(() => undefined, host([]))).not.toThrow();
  });

  test("the CPU time of waited-for children, from /proc/self/stat's cutime and cstime", () => {
    // pid (comm with ) and spaces) state ppid ... utime stime cutime cstime ...
    const stat = '42 (node (x) y) S 1 42 42 0 -1 4194304 100 200 0 0 7 3 123456 7890 20 0 11 0';
    expect(childCpuSeconds(stat)).toBeCloseTo(1313.46, 2);
    expect(childCpuSeconds()).toBeGreaterThanOrEqual(0);
  });

  test("a log's last lines", () => {
    const f = path.join(tmp, 'log');
    fs.writeFileSync(f, 'a\nb\n\nc\n');
    expect(tail(f, 2)).toEqual(['b', 'c']);
    expect(tail(path.join(tmp, 'none'), 2)).toEqual([]);
  });
});

describe("what a running kernel's config lacks (the HIL suites' describeKernel)", () => {
  const config = configValues(['CONFIG_IOMMUFD=y', 'CONFIG_VFIO=m', 'CONFIG_VFIO_CONTAINER=y'].join('\n'));

  test('a bare name wants y or m; NAME=value wants exactly that; =n wants it unset', () => {
    expect(missingConfig(config, ['IOMMUFD', 'CONFIG_VFIO', 'VFIO=m', 'IOMMUFD_VFIO_CONTAINER=n'])).toEqual(
      [],
    );
    expect(
      missingConfig(config, [
        'VFIO_DEVICE_CDEV',
        'VFIO=y',
        'CONFIG_VFIO_CONTAINER=n',
        'SAMPLE_VFIO_MDEV_MTTY=m',
      ]),
    ).toEqual([
      'CONFIG_VFIO_DEVICE_CDEV (not set)',
      'CONFIG_VFIO=y (it is m)',
      'CONFIG_VFIO_CONTAINER=n (it is y)',
      'CONFIG_SAMPLE_VFIO_MDEV_MTTY=m (not set)',
    ]);
  });

  test('anything else is refused', () => {
    expect(() => missingConfig(config, ['IOMMUFD && VFIO'])).toThrow(
      expect.objectContaining({ code: 'EKCONFIG', hint: expect.stringMatching(/IOMMUFD=y/) }),
    );
  });
});
