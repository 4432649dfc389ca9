// Which kernel the lab boots: the lab's own build when one is cached, else the host's own when it
// has the IOMMU, vfio-pci, 9p, kvm and the modules asked for, else Debian's package; a kernel asked
// for by name must have them; and the
// modules each initramfs loads, in dependency order, from modules.dep or from each module's own
// depends=, with soft dependencies before and after as modprobe loads them.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { UsageError } from '../../../../lib/cli/errors';
import { LabError } from '../../../../lib/cli/lab/errors';
import {
  chooseKernel,
  hostKernel,
  missingFeatures,
  parseKernelRequest,
  pathKernel,
  unpackedKernel,
  type KernelNeeds,
  type KernelSources,
  type KernelTree,
} from '../../../../lib/cli/lab/kernel';
import { labEnvironment, labNeeds, type LabRequest, type Provisioned } from '../../../../lib/cli/lab/lab';
import type { Layout } from '../../../../lib/cli/lab/layout';
import { modinfoDepends, modinfoSoftdeps, ModuleIndex, parseSoftdep } from '../../../../lib/cli/lab/modules';
import { parseDeviceSpec } from '../../../../lib/cli/lab/devices';
import { fakeKernel, moduleBytes } from './fake-kernel';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-lab-kernel-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const HOST = '6.1.0-host';
const DEB = 'linux-image-6.12.57+deb12-amd64';
const needs = (extra: Partial<KernelNeeds> = {}): KernelNeeds => ({
  ...labNeeds({ specs: [], modules: [], vmmModules: [], kvm: true }),
  ...extra,
});

const BUILT = '6.12.57-vfio-lab';
const NOT_BUILT = 'no lab kernel is built for lab.config in /cache (--kernel built builds one)';

/**
 * Sources over a fake host root, a fake unpacked Debian package and, when `built` gives its
 * options, a fake build of the lab's own kernel in the cache.
 */
function sources(
  host: Parameters<typeof fakeKernel>[2] | 'none' = {},
  built?: Parameters<typeof fakeKernel>[2],
): KernelSources & { debianCalls: number; builds: number } {
  const hostRoot = fs.mkdtempSync(path.join(tmp, 'host-'));
  if (host !== 'none') fakeKernel(hostRoot, HOST, host);
  const debDir = path.join(tmp, DEB);
  fakeKernel(debDir, '6.12.57+deb12-amd64');
  const builtDir = path.join(fs.mkdtempSync(path.join(tmp, 'cache-')), `linux-built-${BUILT}`);
  if (built) fakeKernel(builtDir, BUILT, built);
  const builtTree = (): KernelTree => ({
    ...(unpackedKernel(builtDir, 'built') as KernelTree),
    package: 'linux-source-6.12',
  });
  const s = {
    debianCalls: 0,
    builds: 0,
    host: () => hostKernel({ root: hostRoot, release: HOST }),
    debian: () => {
      s.debianCalls++;
      return unpackedKernel(debDir, 'debian', DEB) as KernelTree;
    },
    built: () => {
      s.builds++;
      if (!built) fakeKernel(builtDir, BUILT);
      return builtTree();
    },
    cachedBuilt: () => (built ? builtTree() : NOT_BUILT),
    path: pathKernel,
  };
  return s;
}

describe('modules', () => {
  test("depends= from a module's .modinfo", () => {
    expect(modinfoDepends(moduleBytes('x', ['a', 'b-c']))).toEqual(['a', 'b-c']);
    expect(modinfoDepends(moduleBytes('x', []))).toEqual([]);
    expect(modinfoDepends(Buffer.from('no modinfo'))).toEqual([]);
  });

  test('the load order puts dependencies first, skips built-ins, and names what is missing', () => {
    const idx = ModuleIndex.load(fakeKernel(tmp, 'r', { omit: ['netfs'] }));
    expect(idx.loadOrder(['virtio_pci', 'vfio_pci', 'vfio_iommu_type1', '9p', 'kvm_amd', 'nope'])).toEqual({
      order: [
        'vfio',
        'irqbypass',
        'vfio-pci-core',
        'vfio-pci',
        'vfio_iommu_type1',
        '9pnet',
        '9p',
        'kvm',
        'ccp',
        'kvm-amd',
      ],
      missing: ['netfs', 'nope'],
      softMissing: [],
    });
    expect([idx.builtin('virtio-pci'), idx.has('kvm_amd'), idx.has('netfs')]).toEqual([true, true, false]);
  });

  test("modules.dep, where depmod wrote one, is taken over the modules' own depends=", () => {
    const dir = fakeKernel(tmp, 'r');
    fs.writeFileSync(path.join(dir, 'modules.dep'), 'kernel/drivers/nvme.ko: kernel/drivers/e1000.ko\n');
    expect(ModuleIndex.load(dir).loadOrder(['nvme']).order).toEqual(['e1000', 'nvme']);
  });

  test("softdep= lines of a module's .modinfo and of modules.softdep", () => {
    const bytes = Buffer.from('\x7fELF\0softdep=pre: a b post: c\0name=x\0softdep=pre: d\0', 'latin1');
    expect(modinfoSoftdeps(bytes)).toEqual({ pre: ['a', 'b', 'd'], post: ['c'] });
    expect(modinfoSoftdeps(moduleBytes('x', []))).toEqual({ pre: [], post: [] });
    // Names before any pre:/post: load first.
    expect(parseSoftdep('gcm  post: ccm')).toEqual({ pre: ['gcm'], post: ['ccm'] });
  });

  test('soft dependencies load before (pre) and after (post) the module; one the kernel lacks is named, not fatal', () => {
    const dir = fakeKernel(tmp, 'r');
    const file = path.join(dir, 'kernel/drivers/nvme.ko');
    fs.writeFileSync(
      file,
      Buffer.concat([moduleBytes('nvme', ['nvme-core']), Buffer.from('softdep=pre: e1000 gone post: ccp\0')]),
    );
    expect(ModuleIndex.load(dir).loadOrder(['nvme'])).toEqual({
      order: ['e1000', 'nvme-core', 'nvme', 'ccp'],
      missing: [],
      softMissing: ['nvme: gone'],
    });
  });

  test('modules.softdep, and a soft dependency named by an alias in modules.alias', () => {
    const dir = fakeKernel(tmp, 'r');
    fs.writeFileSync(path.join(dir, 'modules.softdep'), '# comment\nsoftdep kvm pre: crypto-e1000\n');
    fs.writeFileSync(
      path.join(dir, 'modules.alias'),
      'alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\nalias crypto-e1000 e1000\n',
    );
    expect(ModuleIndex.load(dir).loadOrder(['kvm']).order).toEqual(['e1000', 'kvm']);
  });

  test('xz-compressed modules are read with xz', () => {
    if (spawnSync('xz', ['--version']).error) return; // no xz here: the gzip case stands for it
    const dir = fakeKernel(tmp, 'r', { omit: ['nvme'] });
    const file = path.join(dir, 'kernel/drivers/nvme.ko');
    fs.writeFileSync(file, moduleBytes('nvme', ['nvme-core']));
    expect(spawnSync('xz', [file]).status).toBe(0);
    expect(ModuleIndex.load(dir).loadOrder(['nvme']).order).toEqual(['nvme-core', 'nvme']);
  });
});

describe('the kernel the lab boots', () => {
  test("auto: the host's kernel when it has everything and no lab kernel is built", () => {
    const s = sources();
    const c = chooseKernel({ kind: 'auto' }, needs(), s);
    expect(c.tree).toMatchObject({
      source: 'host',
      version: HOST,
      vmlinuz: expect.stringMatching(`/boot/vmlinuz-${HOST}$`),
    });
    expect(c.reason).toBe(`the host's kernel ${HOST} (${c.tree.vmlinuz}), since ${NOT_BUILT}`);
    expect([s.debianCalls, s.builds]).toEqual([0, 0]);
  });

  test("auto: a host kernel missing vfio-pci gives way to Debian's package, saying why", () => {
    const s = sources({ omit: ['vfio-pci'] });
    const c = chooseKernel({ kind: 'auto' }, needs(), s);
    expect(c.tree).toMatchObject({ source: 'debian', package: DEB });
    expect(c.reason).toBe(
      `6.12.57+deb12-amd64 from the Debian package ${DEB}, since ${NOT_BUILT}; ` +
        `the host's kernel ${HOST} will not do: no module vfio-pci`,
    );
  });

  test("auto: a cached build of the lab's own kernel comes first, and is never built", () => {
    const s = sources({}, {});
    const c = chooseKernel({ kind: 'auto' }, needs(), s);
    expect(c.tree).toMatchObject({ source: 'built', version: BUILT, package: 'linux-source-6.12' });
    expect(c.reason).toBe(`${BUILT}, the lab's own build of linux-source-6.12 (${c.tree.vmlinuz}), cached`);
    expect([s.debianCalls, s.builds]).toEqual([0, 0]);
    expect(c.index?.has('vfio-pci')).toBe(true);
  });

  test("auto: a cached build without what the lab needs gives way to the host's, then Debian's, saying why", () => {
    const host = chooseKernel({ kind: 'auto' }, needs(), sources({}, { omit: ['9p', '9pnet_virtio'] }));
    expect(host.tree.source).toBe('host');
    expect(host.reason).toMatch(
      `since the lab's own kernel ${BUILT} will not do: no module 9pnet_virtio, 9p`,
    );
    const deb = chooseKernel({ kind: 'auto' }, needs(), sources('none', { config: ['CONFIG_IRQ_REMAP=y'] }));
    expect(deb.tree.source).toBe('debian');
    expect(deb.reason).toMatch(
      new RegExp(`will not do: CONFIG_INTEL_IOMMU=unset \\(the lab needs it built in\\); .* has no image`),
    );
  });

  test('--kernel built: builds (here: the fake) and takes it, or says what it lacks; never falls back', () => {
    const s = sources({ omit: ['vfio-pci'] });
    const c = chooseKernel({ kind: 'built' }, needs(), s);
    expect(c.tree.source).toBe('built');
    expect(c.reason).toMatch(/the lab's own build of linux-source-6\.12 .*, as asked$/);
    expect([s.builds, s.debianCalls]).toEqual([1, 0]);
    const lacking = sources({}, { omit: ['kvm-amd'] });
    lacking.built = lacking.cachedBuilt as () => KernelTree;
    expect(() => chooseKernel({ kind: 'built' }, needs(), lacking)).toThrow(
      expect.objectContaining({
        code: 'ELABKERNEL',
        message: expect.stringMatching(/lab's own build .* lacks what the lab needs: no module kvm-amd/),
        hint: expect.stringMatching(/scripts\/lab\/kernel\/lab\.config/),
      }),
    );
  });

  test.each([
    [
      'no IOMMU built in',
      { config: ['CONFIG_INTEL_IOMMU=n', 'CONFIG_IRQ_REMAP=y'] },
      /CONFIG_INTEL_IOMMU=n \(the lab needs it built in\)/,
    ],
    ['no config to tell', { config: null }, /no build config to show CONFIG_INTEL_IOMMU=y/],
    ['no kvm-amd', { omit: ['kvm-amd'] }, /no module kvm-amd/],
    ['no image', { image: false }, new RegExp(`has no image at .*/boot/vmlinuz-${HOST}`)],
    ['no 9p', { omit: ['9p', '9pnet_virtio'] }, /no module 9pnet_virtio, 9p/],
  ])("auto: a host kernel with %s gives way to Debian's", (_what, host, why) => {
    const c = chooseKernel({ kind: 'auto' }, needs(), sources(host));
    expect(c.tree.source).toBe('debian');
    expect(c.reason).toMatch(why);
  });

  test('auto: a host without modules at all; and one without kvm-amd is enough with --no-kvm', () => {
    expect(chooseKernel({ kind: 'auto' }, needs(), sources('none')).reason).toMatch(/has no image/);
    const noKvm = labNeeds({ specs: [], modules: [], vmmModules: [], kvm: false });
    expect(
      chooseKernel({ kind: 'auto' }, noKvm, sources({ omit: ['kvm-amd', 'kvm', 'ccp'] })).tree.source,
    ).toBe('host');
  });

  test("the modules the devices and the user name count: a host without them gives way; Debian's without them is an error", () => {
    const specs = [parseDeviceSpec('e1000,driver=e1000')];
    const withE1000 = labNeeds({ specs, modules: ['nvme'], vmmModules: [], kvm: true });
    expect(withE1000.modules).toEqual(expect.arrayContaining(['e1000', 'nvme', 'vfio-pci', '9p', 'kvm-amd']));
    expect(chooseKernel({ kind: 'auto' }, withE1000, sources({ omit: ['e1000'] })).tree.source).toBe(
      'debian',
    );
    const e = (() => {
      try {
        chooseKernel({ kind: 'auto' }, needs({ vmmModules: ['no_such_driver'] }), sources());
      } catch (err) {
        return err as LabError;
      }
    })();
    expect(e).toBeInstanceOf(LabError);
    expect(e).toMatchObject({ code: 'ELABKERNEL', exitStatus: 1 });
    expect(e!.message).toMatch(/no module no_such_driver/);
  });

  test("--kernel host: the host's or an error; it never falls back", () => {
    expect(chooseKernel({ kind: 'host' }, needs(), sources()).tree.source).toBe('host');
    expect(() => chooseKernel({ kind: 'host' }, needs(), sources({ omit: ['vfio-pci'] }))).toThrow(
      expect.objectContaining({ code: 'ELABKERNEL', message: expect.stringMatching(/no module vfio-pci/) }),
    );
    expect(() => chooseKernel({ kind: 'host' }, needs(), sources({ image: false }))).toThrow(
      expect.objectContaining({ code: 'ELABPROVISION', exitStatus: 3 }),
    );
  });

  test('--kernel PATH: a directory as a package unpacks, or an image, unchecked when it has no config or modules', () => {
    const s = sources();
    const dir = path.join(tmp, 'mine');
    fakeKernel(dir, '6.15.0-mine');
    expect(chooseKernel({ kind: 'path', path: dir }, needs(), s).tree).toMatchObject({
      source: 'path',
      version: '6.15.0-mine',
    });
    const image = path.join(tmp, 'bzImage');
    fs.writeFileSync(image, 'bzImage');
    const c = chooseKernel(
      { kind: 'path', path: image, modules: path.join(tmp, 'empty') },
      needs({ modules: [], vmmModules: [] }),
      {
        ...s,
        path: (r) => ({ ...pathKernel({ path: r.path }), modulesDir: null }),
      },
    );
    expect(c.reason).toMatch(
      /as asked \(unchecked: no build config to show CONFIG_INTEL_IOMMU=y; taken to be built in\)/,
    );
    expect(() => pathKernel({ path: path.join(tmp, 'nope') })).toThrow(UsageError);
  });

  test('what a kernel lacks, one phrase each', () => {
    const t = hostKernel({ root: path.join(tmp, 'h'), release: HOST });
    expect(t).toMatch(/has no image/);
    fakeKernel(path.join(tmp, 'h'), HOST, { omit: ['9p'], config: ['CONFIG_INTEL_IOMMU=y'] });
    const tree = hostKernel({ root: path.join(tmp, 'h'), release: HOST }) as KernelTree;
    expect(missingFeatures(tree, needs(), ModuleIndex.load(tree.modulesDir!))).toEqual([
      'CONFIG_IRQ_REMAP=unset (the lab needs it built in)',
      'no module 9p',
    ]);
  });
});

describe('--kernel', () => {
  test.each([
    ['auto', { kind: 'auto' }],
    ['host', { kind: 'host' }],
    ['debian', { kind: 'debian' }],
    ['built', { kind: 'built' }],
    [DEB, { kind: 'debian', package: DEB }],
    ['/boot/vmlinuz-6.1', { kind: 'path', path: '/boot/vmlinuz-6.1' }],
  ])('%s', (text, want) => {
    expect(parseKernelRequest(text)).toEqual(want);
  });

  test('a path with --modules; anything else is a usage error', () => {
    expect(parseKernelRequest('./bzImage', '/m')).toEqual({
      kind: 'path',
      path: path.resolve('bzImage'),
      modules: '/m',
    });
    expect(() => parseKernelRequest('latest')).toThrow(UsageError);
    expect(() => parseKernelRequest('host', '/m')).toThrow(/--modules goes with a kernel given by path/);
    expect(() => parseKernelRequest('built', '/m')).toThrow(/--modules goes with a kernel given by path/);
  });
});

describe('what the command sees of the kernel', () => {
  test('VFIO_BRIDGE_VMM_KERNEL, and VFIO_BRIDGE_LAB_MODULES when the kernel has modules', () => {
    const tree = sources({}, {}).cachedBuilt() as KernelTree;
    const r = { env: { X: '1' } } as unknown as LabRequest;
    const layout = { devices: [] } as unknown as Layout;
    const p = (t: KernelTree): Provisioned => ({
      kernel: { tree: t, index: null, reason: '' },
      initramfs: '/i',
      vmmInitramfs: null,
      seconds: 0,
    });
    expect(labEnvironment(r, layout, p(tree))).toMatchObject({
      VFIO_BRIDGE_VMM_KERNEL: tree.vmlinuz,
      VFIO_BRIDGE_LAB_MODULES: tree.modulesDir,
      X: '1',
    });
    expect(labEnvironment(r, layout, p({ ...tree, modulesDir: null }))).not.toHaveProperty(
      'VFIO_BRIDGE_LAB_MODULES',
    );
    expect(labEnvironment(r, layout, null)).not.toHaveProperty('VFIO_BRIDGE_LAB_MODULES');
  });
});
