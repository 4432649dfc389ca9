// list shows the kernel modules that could drive each device, matched from modules.alias globs.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { globToRegExp, ModuleAliases } from '../../../lib/cli/modules';
import { tempDir } from '../helpers';
import { makeSysfs } from '../../support/fake-sysfs';
import { cli, validJson } from '../../support/cli-harness';

const ALIASES = `# Aliases extracted from modules themselves.
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139too
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp
alias pci:v*d*sv*sd*bc04sc03i* snd_hda_intel
alias pci:v*d*sv*sd*bc06sc04i0[01] shpchp
alias usb:v*p*d*dc*dsc*dp*ic09isc00ip*in* usbcore
alias acpi*:PNP0A03:* pci_root
`;

let tmp: ReturnType<typeof tempDir>;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  tmp = tempDir('vfio-bridge-modules-');
  makeSysfs(path.join(tmp.dir, 'sys'));
  fs.writeFileSync(path.join(tmp.dir, 'modules.alias'), ALIASES);
  env = {
    VFIO_BRIDGE_SYSFS_ROOT: path.join(tmp.dir, 'sys'),
    VFIO_BRIDGE_PCI_IDS: '',
    VFIO_BRIDGE_MODULES_ALIAS: path.join(tmp.dir, 'modules.alias'),
  };
});
afterEach(() => tmp.remove());

test('globs match as fnmatch does: *, ? and [...]', () => {
  expect(globToRegExp('pci:v*d*bc06sc04i0[01]').test('pci:v00001B36d00000001bc06sc04i00')).toBe(true);
  expect(globToRegExp('pci:v*d*bc06sc04i0[01]').test('pci:v00001B36d00000001bc06sc04i02')).toBe(false);
  expect(globToRegExp('a?c.d').test('abc.d')).toBe(true);
  expect(globToRegExp('a?c.d').test('abcxd')).toBe(false);
});

test('the modules of each device, vendor-specific first; only pci: aliases count', () => {
  const a = ModuleAliases.load(env.VFIO_BRIDGE_MODULES_ALIAS)!;
  expect(a.match('pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00')).toEqual(['8139too', '8139cp']);
  expect(a.match('pci:v00008086d0000293Esv00001AF4sd00001100bc04sc03i00')).toEqual(['snd_hda_intel']);
  expect(a.match('pci:v00001234d000011E8sv00001AF4sd00001100bc00sc00i00')).toEqual([]);
});

test('list shows them lspci -k style, and in --json', async () => {
  const r = await cli(['list'], env);
  expect(r.code).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines[0]).toMatch(/driver e1000, .*, modules e1000$/);
  expect(lines[3]).toMatch(/driver vfio-pci, .*, modules 8139too, 8139cp$/);
  expect(lines[4]).toMatch(/driver none, no IOMMU group, modules shpchp$/);
  const doc = validJson('list', (await cli(['list', '--json'], env)).stdout) as {
    devices: { bdf: string; modules: string[] | null }[];
  };
  expect(doc.devices.map((d) => d.modules)).toEqual([
    ['e1000'],
    ['e1000e'],
    ['snd_hda_intel'],
    ['8139too', '8139cp'],
    ['shpchp'],
  ]);
});

test('without a modules.alias the modules are unknown (null), not an error; a named one must exist', async () => {
  const missing = path.join(tmp.dir, 'nope');
  const r = await cli(['list', '--json'], { ...env, VFIO_BRIDGE_MODULES_ALIAS: missing });
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`cannot read the modules.alias file ${missing}`);
  expect(
    ModuleAliases.load(undefined) === null || ModuleAliases.load(undefined) instanceof ModuleAliases,
  ).toBe(true);
});
