// scripts/test-phases.sh, which `npm test` times its phases with and runs the lab's provisioning
// beside them: each phase's wall time at the end, the background job's output and status, and a
// job stopped (its whole process group) when npm test ends before it, failing or not.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const HELPER = path.join(__dirname, '../../../scripts/test-phases.sh');

// Each test sleeps 2 to 4 s in bash on purpose; a busy machine adds to that.
jest.setTimeout(30_000);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'test-phases-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs `body` after sourcing the helper, as scripts/test.sh does. */
function run(body: string): { status: number | null; stdout: string; stderr: string } {
  const script = path.join(dir, 'script.sh');
  fs.writeFileSync(script, `set -euo pipefail\n. ${JSON.stringify(HELPER)}\n${body}\n`);
  const r = spawnSync('bash', [script], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, TMPDIR: dir },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The summary's rows: [seconds, what]. */
function summary(stdout: string): [number, string][] {
  const at = stdout.indexOf('=== wall time per phase ===\n');
  expect(at).toBeGreaterThanOrEqual(0);
  return stdout
    .slice(at)
    .split('\n')
    .slice(1)
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^ *(\d+) s {2}(.*)$/.exec(l);
      if (m === null) throw new Error(`not a summary row: ${JSON.stringify(l)}`);
      return [Number(m[1]), m[2]!];
    });
}

test('each phase, the background job and the total, in seconds, after the job reported its lines', () => {
  const r = run(`
phase 'one'
background_start 'the job' bash -c 'echo "lab: first"; echo noise; sleep 2; echo "lab: second"; exit 3'
sleep 1
phase 'two'
status=0
background_follow '^lab: ' || status=$?
echo "status $status"
background_output | grep -c noise
phase 'three'`);
  expect(r.status).toBe(0);
  expect(r.stderr).toBe('lab: first\nlab: second\n');
  expect(r.stdout).toMatch(
    /^\n=== one \(0 s in\) ===\n=== the job: in the background from here \(log .*\) ===\n\n=== two \(1 s in\) ===\nstatus 3\n1\n\n=== three \(\d s in\) ===\n/,
  );
  const rows = summary(r.stdout);
  expect(rows.map(([, what]) => what)).toEqual([
    'one',
    'two',
    'three',
    'the job, in the background from 0 s in',
    'total',
  ]);
  // Rounded wall times on a machine that may be busy: at least what was slept, a little more at most.
  const [one, two, three, job, total] = rows.map(([s]) => s);
  expect([one! >= 1 && one! <= 2, two! >= 1 && two! <= 3, three, job! >= 2 && job! <= 3]).toEqual([
    true,
    true,
    0,
    true,
  ]);
  expect(Math.abs(total! - (one! + two! + three!))).toBeLessThanOrEqual(1); // the phases make the total
  expect(fs.readdirSync(dir)).toEqual(['script.sh']); // the job's log went with it
});

test('a failing phase ends npm test with its status, names the phase, and stops the job and its children', () => {
  const mark = path.join(dir, 'still-running');
  const r = run(`
phase 'long'
background_start 'the job' bash -c 'sleep 3 & wait; touch ${JSON.stringify(mark)}'
phase 'failing'
exit 7`);
  expect(r.status).toBe(7);
  expect(r.stdout).toContain('!!! npm test failed (exit 7) in: failing !!!');
  expect(summary(r.stdout).map(([, what]) => what)).toEqual([
    'long',
    'failing',
    'the job, in the background from 0 s in (stopped: npm test ended first)',
    'total',
  ]);
  // Had the job (or the sleep it started) lived on, it would leave its mark after 3 s.
  spawnSync('sleep', ['3.5']);
  expect(fs.existsSync(mark)).toBe(false);
});
