// What scripts rely on: the version, failures in one shape (text or JSON), a quiet end on a
// closed pipe, and typed errors for files the operator names.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

import { ROOT, tempDir } from '../helpers';
import { makeSysfs } from '../../support/fake-sysfs';
import { cli } from '../../support/cli-harness';

let tmp: ReturnType<typeof tempDir>;
let env: NodeJS.ProcessEnv;

beforeEach(() => {
  tmp = tempDir('vfio-bridge-scripts-');
  makeSysfs(path.join(tmp.dir, 'sys'));
  env = {
    VFIO_BRIDGE_SYSFS_ROOT: path.join(tmp.dir, 'sys'),
    VFIO_BRIDGE_STATE: path.join(tmp.dir, 'drivers.json'),
    VFIO_BRIDGE_PCI_IDS: '',
  };
});
afterEach(() => tmp.remove());

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };

test('--version prints the version in package.json', async () => {
  for (const flag of ['--version', '-V']) {
    const r = await cli([flag], env);
    expect(r).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
  }
});

describe('every failure has one shape', () => {
  const cases: [string[], number, string][] = [
    [['bind', 'x'], 2, 'EUSAGE'],
    [['bind', '--bogus', '00:04.0'], 2, 'EUSAGE'],
    [['read', '00:04.0', 'bar0', '0'], 2, 'EUSAGE'], // --width missing
    [['restore', '00:04.0'], 1, 'ENOENT'],
    [['info', '00:09.0'], 1, 'ENOENT'],
    [['list', '--pci-ids', '/nonexistent'], 1, 'ENOENT'],
  ];

  test.each(cases)('%j: message [CODE], then the hint, on stderr', async (argv, exit, code) => {
    const r = await cli(argv, env);
    expect(r.code).toBe(exit);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^vfio-bridge: [^\\n]+ \\[${code}\\]\\n {2}hint: [^\\n]+\\n$`));
  });

  test.each(cases)(
    '%j --json: one {"error":{message,hint,code}} line on stderr',
    async (argv, exit, code) => {
      const r = await cli([...argv, '--json'], env);
      expect(r.code).toBe(exit);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      const doc = JSON.parse(r.stderr) as { error: { message: string; hint: string; code: string } };
      expect(Object.keys(doc)).toEqual(['error']);
      expect(doc.error.code).toBe(code);
      expect(doc.error.message).not.toContain('hint:');
      expect(doc.error.hint.length).toBeGreaterThan(0);
    },
  );

  test('--pci-ids naming a missing file is a typed failure, not a raw fs error', async () => {
    const r = await cli(['list', '--pci-ids', '/nonexistent'], env);
    expect(r.stderr).toContain('cannot read the pci.ids file /nonexistent (from --pci-ids)');
    expect(r.stderr).toContain('leave --pci-ids out to use the system one');
  });

  test('--help says how failures look', async () => {
    const r = await cli(['--help'], env);
    expect(r.stdout).toContain('{"error":{"message":...,"hint":...,"code":...}}');
    expect(r.stdout).toContain(
      'Exit status: 0 done, 1 the operation failed, 2 the command line is wrong, 130 stopped (Ctrl-C).',
    );
  });
});

describe('the executable in a pipeline', () => {
  const bin = `${JSON.stringify(process.execPath)} -r @swc-node/register ${JSON.stringify(path.join(ROOT, 'lib/cli/main.ts'))}`;
  const sh = (cmd: string) =>
    spawnSync('bash', ['-c', `set -o pipefail; ${cmd}; echo "status=\${PIPESTATUS[0]}" >&2`], {
      env: { ...process.env, ...env },
      cwd: ROOT,
      encoding: 'utf8',
    });

  test('a reader that goes away ends it quietly, as coreutils end (no stack, status 141 or 0)', () => {
    for (const cmd of [`${bin} help dump | head -1 >/dev/null`, `${bin} schema info | true`]) {
      const r = sh(cmd);
      expect(r.stderr).toMatch(/^status=(0|141)\n$/);
    }
  });
});
