// The README's guides that need a device, run on the lab's edu. The device guide runs as a user
// would run it: the example file as it is shown, with 'vfio-bridge' pointed at lib/ and its
// top-level await wrapped in an async function (a CommonJS script cannot await at the top), in a
// child process of its own so the device's group is free again for the other tests when it ends.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeDevice, devices } from './hil';

const root = path.join(__dirname, '../..');

/** docs/examples/NAME as a CommonJS-friendly script in a temporary directory. */
function runnable(name: string): string {
  const src = fs
    .readFileSync(path.join(root, 'docs/examples', name), 'utf8')
    .replaceAll("from 'vfio-bridge'", `from ${JSON.stringify(path.join(root, 'lib'))}`);
  const imports = /^(?:import[^;]*;\n)+/.exec(src)?.[0] ?? '';
  const body = src.slice(imports.length);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-docs-'));
  const file = path.join(dir, name);
  fs.writeFileSync(
    file,
    `${imports}\n(async () => {\n${body}\n})().catch((e) => {\n  console.error(e);\n  process.exit(1);\n});\n`,
  );
  return file;
}

// The hardware-in-the-loop guide's example is a jest suite itself: run it here, on the lab's edu
// (it closes the device in its afterAll, before the guide's child process opens it).
if (devices.has('edu')) process.env.EDU_BDF ??= devices.get('edu');
jest.requireActual(path.join(root, 'docs/examples/hil-test.ts'));

describeDevice('edu', 'the README device guide', (bdf) => {
  test('docs/examples/device.ts runs: registers, DMA, an MSI and the reset check', () => {
    const file = runnable('device.ts');
    const r = spawnSync(process.execPath, ['-r', require.resolve('@swc-node/register'), file, bdf()], {
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
    });
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
    if (r.status !== 0) throw new Error(`device.ts exited with ${r.status}:\n${r.stdout}${r.stderr}`);
    expect(r.stdout.split('\n')).toEqual(
      expect.arrayContaining([
        'vendor 1234',
        'id 010000ed',
        'liveness edcba987',
        'copied back: aa',
        'MSI vector 0: 1',
      ]),
    );
  }, 150_000);
});
