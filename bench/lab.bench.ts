/**
 * npm run bench:lab: how long `vfio-bridge lab` takes to get a guest ready, with 1 device and with 6
 * (edu, e1000, e1000e, rtl8139, nvme, ivshmem), cold and warm. Cold is a first run on a machine: an
 * empty cache, so the kernel package is downloaded and unpacked and the initramfs built; warm is
 * every later run (the median of three). Boot is QEMU's start to the guest's `lab: ready` (modules
 * loaded, devices bound, 9p mounted); the command is `true`. The runs take the machine's usual
 * guest lock, so they wait for anyone else's lab. Needs dist/ (npm run build:ts).
 * These runs take Debian's kernel (`--kernel debian`), as the figures before the lab's own kernel did.
 * Then the same warm boot with 6 devices on the lab's own kernel (`--kernel built`, built first if
 * the cache has none) and on Debian's, alternating, median of three each, as a ratio; and the cold
 * build time the built kernel's record holds (its build.json in the cache).
 * Last, a user's test file (the testing helpers on a fake sysfs tree, and mappings of memfds: inputs
 * that need no device) run with jest on the host and the same file run in the lab with
 * `vfio-bridge lab -- npx jest FILE`: the lab's overhead as a whole (boot and the guest's TCG) and the
 * command's own share.
 * `-- --warm-only` skips the cold runs (and their downloads); `-- --kernels-only` runs only the
 * kernel comparison, `-- --test-file-only` only the test file's. One run, printed; nothing is
 * asserted.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { builtKernel, formatSeconds } from '../lib/cli/lab/kbuild';
import { defaultCacheDir } from '../lib/cli/lab/provision';

const CLI = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
const SETS = {
  1: ['edu'],
  6: ['edu', 'e1000', 'e1000e', 'rtl8139', 'nvme', 'ivshmem'],
};

interface Figures {
  provision: number;
  boot: number;
  /** The command's own time in the guest. */
  command: number;
  /** From starting the CLI to its end, less the wait for another run's guest. */
  total: number;
}

/** One `vfio-bridge lab --json --kernel KERNEL ... -- COMMAND` (default `true`) with `cache`. */
function labRun(
  devices: readonly string[],
  cache: string,
  kernel = 'debian',
  command: readonly string[] = ['true'],
): Figures {
  const t0 = performance.now();
  const r = spawnSync(
    process.execPath,
    [CLI, 'lab', '--json', '--kernel', kernel, ...devices.flatMap((d) => ['--device', d]), '--', ...command],
    {
      encoding: 'utf8',
      env: {
        ...process.env,
        VFIO_BRIDGE_LAB_CACHE: cache,
        VFIO_BRIDGE_LAB_LOCK: path.join(defaultCacheDir(process.env), 'guest.lock'),
      },
    },
  );
  const total = (performance.now() - t0) / 1000;
  if (r.status !== 0)
    throw new Error(`bench:lab: the lab exited ${r.status}:\n${r.stderr.split('\n').slice(-12).join('\n')}`);
  // With --json the guest's console (a command's own output too) goes to stderr: stdout is the summary.
  const doc = JSON.parse(r.stdout) as {
    seconds: { provision: number; wait: number; boot: number; command: number };
  };
  return {
    provision: doc.seconds.provision,
    boot: doc.seconds.boot,
    command: doc.seconds.command,
    total: total - doc.seconds.wait,
  };
}

/** A user's test file: the testing helpers on a fake sysfs tree, and memfd mappings. */
const TEST_FILES = ['test/native/testing/acquire.test.ts', 'test/native/mapping.test.ts'];

/** The test files under jest on the host (median of 3) and in the lab (warm, median of 3). */
function testFile(): string {
  const root = path.join(__dirname, '..');
  const jest = ['npx', 'jest', '--selectProjects', 'native', '--ci', '--', ...TEST_FILES];
  const host = [0, 1, 2].map(() => {
    const t0 = performance.now();
    const r = spawnSync(jest[0], jest.slice(1), { cwd: root, encoding: 'utf8' });
    if (r.status !== 0)
      throw new Error(`bench:lab: jest on the host exited ${r.status}:\n${r.stderr.slice(-2000)}`);
    return (performance.now() - t0) / 1000;
  });
  const cache = defaultCacheDir(process.env);
  const lab = [0, 1, 2].map(() => labRun(SETS[1], cache, 'built', jest));
  const h = median(host);
  const [total, boot, command] = (['total', 'boot', 'command'] as const).map((k) =>
    median(lab.map((l) => l[k])),
  );
  return (
    `\na user's test file (${TEST_FILES.join(', ')}: fake sysfs and memfds), jest, median of 3\n` +
    `  on the host                        ${s(h)}\n` +
    `  in the lab (\`vfio-bridge lab -- npx jest\`, warm, 1 device)  ${s(total)}  ` +
    `(boot ${boot.toFixed(1)} s, jest in the guest ${command.toFixed(1)} s)\n` +
    `  lab / host: ${(total / h).toFixed(2)}x as a whole, ${(command / h).toFixed(2)}x for jest alone ` +
    `(the guest's TCG), ${((total - command) / h).toFixed(2)}x of the host's time in the lab's own work\n`
  );
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const s = (v: number): string => `${v.toFixed(1)} s`.padStart(8);

/** Warm boots on the lab's own kernel and on Debian's, and the built kernel's cold build time. */
async function kernels(): Promise<string> {
  const cache = defaultCacheDir(process.env);
  const say = (l: string): boolean => process.stderr.write(`bench:lab: ${l}\n`);
  const built = await builtKernel({ cache, say });
  const boots: Record<string, number[]> = { built: [], debian: [] };
  for (const k of ['built', 'debian']) labRun(SETS[6], cache, k); // the initramfs images, if new
  for (let i = 0; i < 3; i++)
    for (const k of ['built', 'debian']) boots[k].push(labRun(SETS[6], cache, k).boot);
  const [b, d] = [median(boots['built']), median(boots['debian'])];
  const r = built.record;
  const mib = (fs.statSync(built.tree.vmlinuz).size / 2 ** 20).toFixed(1);
  return (
    `\nlab boot, 6 devices, warm (median of 3, alternating)\n` +
    `  Debian's kernel       ${s(d)}\n` +
    `  the lab's own kernel  ${s(b)}  (${r.release}, bzImage ${mib} MiB)\n` +
    `  own / Debian: ${(b / d).toFixed(2)}x\n` +
    `the lab's own kernel: cold build ${formatSeconds(r.seconds)} with ${r.jobs} jobs ` +
    `(source download and unpacking ${formatSeconds(r.sourceSeconds)} more), ${r.at}\n`
  );
}

async function main(): Promise<void> {
  if (!fs.existsSync(CLI)) throw new Error('bench:lab: dist/ is not built (npm run build:ts)');
  if (process.argv.includes('--kernels-only')) {
    process.stdout.write(await kernels());
    return;
  }
  if (process.argv.includes('--test-file-only')) {
    process.stdout.write(testFile());
    return;
  }
  const warmOnly = process.argv.includes('--warm-only');
  const rows: string[] = [];
  const warmBoot: Record<number, number> = {};
  for (const n of [1, 6] as const) {
    if (!warmOnly) {
      const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-bench-lab-'));
      try {
        const cold = labRun(SETS[n], cache);
        rows.push(
          `${n} device${n > 1 ? 's' : ' '}  cold  ${s(cold.provision)}  ${s(cold.boot)}  ${s(cold.total)}`,
        );
      } finally {
        fs.rmSync(cache, { recursive: true, force: true });
      }
    }
    const cache = defaultCacheDir(process.env);
    labRun(SETS[n], cache); // builds this set's initramfs if it is new
    const warm = [0, 1, 2].map(() => labRun(SETS[n], cache));
    warmBoot[n] = median(warm.map((w) => w.boot));
    const row = (k: keyof Figures): string => s(median(warm.map((w) => w[k])));
    rows.push(`${n} device${n > 1 ? 's' : ' '}  warm  ${row('provision')}  ${row('boot')}  ${row('total')}`);
  }
  process.stdout.write(
    `lab boot (${os.cpus().length} CPUs; warm: median of 3)\n` +
      `                provision      boot     total\n` +
      rows.map((r) => `${r}\n`).join('') +
      `warm boot, 6 devices / 1 device: ${(warmBoot[6] / warmBoot[1]).toFixed(2)}x (target <= 1.2x)\n`,
  );
  process.stdout.write(await kernels());
  process.stdout.write(testFile());
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
