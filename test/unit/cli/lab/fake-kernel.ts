/**
 * Kernels on disk for the lab's kernel choice, as a distribution installs one (boot/vmlinuz-R,
 * boot/config-R, lib/modules/R) or as a Debian package unpacks: module files whose .modinfo says
 * what they depend on, some built in, some compressed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

/** Module name to its depends=, as the lab's real kernels have them. */
export const MODULES: Record<string, string[]> = {
  irqbypass: [],
  vfio: [],
  'vfio-pci-core': ['vfio', 'irqbypass'],
  'vfio-pci': ['vfio-pci-core', 'vfio'],
  vfio_iommu_type1: ['vfio'],
  netfs: [],
  '9pnet': [],
  '9pnet_virtio': ['9pnet'],
  '9p': ['9pnet', 'netfs'],
  ccp: [],
  kvm: [],
  'kvm-amd': ['kvm', 'ccp'],
  'nvme-core': [],
  nvme: ['nvme-core'],
  e1000: [],
};

export interface FakeKernelOptions {
  /** Modules left out. */
  omit?: string[];
  /** Built-in modules (listed in modules.builtin, no file). */
  builtin?: string[];
  /** The config's lines; null writes no config. */
  config?: string[] | null;
  /** Write the image (default true). */
  image?: boolean;
}

/** A module file: some bytes, then the .modinfo strings. */
export function moduleBytes(name: string, deps: string[]): Buffer {
  return Buffer.from(`\x7fELF...\0license=GPL\0depends=${deps.join(',')}\0name=${name}\0`, 'latin1');
}

/** Writes a kernel with `release` under `root` (boot/ and lib/modules/); returns its modules directory. */
export function fakeKernel(root: string, release: string, opts: FakeKernelOptions = {}): string {
  const boot = path.join(root, 'boot');
  const mods = path.join(root, 'lib/modules', release);
  fs.mkdirSync(boot, { recursive: true });
  fs.mkdirSync(path.join(mods, 'kernel/drivers'), { recursive: true });
  if (opts.image ?? true) fs.writeFileSync(path.join(boot, `vmlinuz-${release}`), 'bzImage');
  if (opts.config !== null) {
    fs.writeFileSync(
      path.join(boot, `config-${release}`),
      (opts.config ?? ['CONFIG_INTEL_IOMMU=y', 'CONFIG_IRQ_REMAP=y', '# CONFIG_FOO is not set']).join('\n') +
        '\n',
    );
  }
  const builtin = opts.builtin ?? ['virtio_pci'];
  fs.writeFileSync(
    path.join(mods, 'modules.builtin'),
    builtin.map((m) => `kernel/drivers/${m}.ko\n`).join(''),
  );
  for (const [name, deps] of Object.entries(MODULES)) {
    if (opts.omit?.includes(name) || builtin.includes(name)) continue;
    const bytes = moduleBytes(name, deps);
    // Some compressed, as distributions ship them.
    if (name === 'ccp')
      fs.writeFileSync(path.join(mods, 'kernel/drivers', `${name}.ko.gz`), zlib.gzipSync(bytes));
    else fs.writeFileSync(path.join(mods, 'kernel/drivers', `${name}.ko`), bytes);
  }
  return mods;
}
