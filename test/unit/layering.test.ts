// The house's floors: each folder of lib/ imports only the folders below it. lib/kvm is the KVM
// binding only (no PCI, no VFIO: the PCI-to-KVM glue is lib/vmm's), lib/memory is the pure memory
// model, and lib/base (with lib/types.ts) holds what they all share.
import * as fs from 'node:fs';
import * as path from 'node:path';

const LIB = path.join(__dirname, '..', '..', 'lib');

/** The lib/ folders each file of `folder` imports (relative imports leaving the folder). */
function importedFolders(folder: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) {
        const text = fs.readFileSync(p, 'utf8');
        for (const m of text.matchAll(/(?:from|import\(|require\()\s*'(\.{1,2}\/[^']+)'/g)) {
          const target = path.relative(LIB, path.resolve(path.dirname(p), m[1]));
          const first = target.split(path.sep)[0];
          if (first === folder || first.startsWith('..')) continue;
          // lib/base's error.ts, events.ts, values.ts, checks.ts and guest-error.ts load without the
          // addon: lib/memory may use them.
          const top = ['error', 'events', 'values', 'checks', 'guest-error'].some(
            (f) => target === path.join('base', f),
          )
            ? target.split(path.sep).join('/')
            : first;
          const file = path.relative(LIB, p);
          out.set(file, [...(out.get(file) ?? []), top]);
        }
      }
    }
  };
  walk(path.join(LIB, folder));
  return out;
}

/** Files of `folder` that import a folder outside `allowed`. */
function violations(folder: string, allowed: readonly string[]): string[] {
  const bad: string[] = [];
  for (const [file, tops] of importedFolders(folder)) {
    for (const t of tops) {
      const name = t.replace(/\.ts$/, '');
      if (!allowed.includes(name) && !(name.startsWith('base/') && allowed.includes('base')))
        bad.push(`${file} -> ${t}`);
    }
  }
  return bad;
}

describe('layering', () => {
  test('lib/base imports only the addon', () => {
    expect(violations('base', ['native', 'types'])).toEqual([]);
  });

  test('lib/memory imports nothing of the package but its shared types and the error classes', () => {
    expect(
      violations('memory', [
        'types',
        'base/error',
        'base/events',
        'base/values',
        'base/checks',
        'base/guest-error',
      ]),
    ).toEqual([]);
  });

  test('lib/kvm imports neither lib/pci nor lib/vfio (nor lib/dma, lib/vmm)', () => {
    expect(violations('kvm', ['native', 'types', 'base', 'memory'])).toEqual([]);
  });

  test('lib/vfio does not import lib/kvm, lib/pci, lib/dma or lib/vmm', () => {
    expect(violations('vfio', ['native', 'types', 'base'])).toEqual([]);
  });

  test('lib/dma (guest RAM, the DMA listener) does not import lib/vmm or lib/kvm', () => {
    expect(violations('dma', ['native', 'types', 'base', 'memory', 'vfio'])).toEqual([]);
  });

  test('lib/testing (the test helpers) builds on lib/vfio, lib/pci, lib/dma and the CLI, never on lib/vmm or lib/kvm', () => {
    expect(violations('testing', ['native', 'types', 'base', 'vfio', 'pci', 'dma', 'cli'])).toEqual([]);
  });

  test('lib/cli/lab (the lab command) imports no device layer: it runs where the addon cannot load', () => {
    const dir = path.join(LIB, 'cli', 'lab');
    const bad: string[] = [];
    for (const f of fs.readdirSync(dir)) {
      for (const m of fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/from '(\.{1,2}\/[^']+)'/g)) {
        const target = path.relative(LIB, path.resolve(dir, m[1]));
        if (
          !['cli/lab', 'cli/errors', 'base/error'].some((ok) => target === ok || target.startsWith(`${ok}/`))
        )
          bad.push(`${f} -> ${target}`);
      }
    }
    expect(bad).toEqual([]);
  });

  test('the check sees imports: lib/vmm imports lib/kvm and lib/pci', () => {
    const tops = new Set([...importedFolders('vmm').values()].flat());
    expect([tops.has('kvm'), tops.has('pci')]).toEqual([true, true]);
  });
});
