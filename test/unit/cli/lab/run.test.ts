// A lab run's verdict, on a stand-in for QEMU that plays each way a guest can end: the status comes
// only from the rc file the guest writes; a FAIL line, a guest that never boots, QEMU refusing its
// command line and a timeout are each a LabError saying so; a kernel panic before init boots once
// more; the run directory goes, the console stays. And the locks that keep one guest at a time.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { AbortError } from '../../../../lib/base/error';
import { reportFailure } from '../../../../lib/cli/errors';
import { LabError } from '../../../../lib/cli/lab/errors';
import { parseDeviceSpec } from '../../../../lib/cli/lab/devices';
import { layOut } from '../../../../lib/cli/lab/layout';
import { FileLock } from '../../../../lib/cli/lab/lock';
import { runGuest, type GuestRun } from '../../../../lib/cli/lab/run';

// Finds the run directory in its -fsdev argument and behaves as its -kernel says (a child process
// does not see jest's process.env), copying what the guest would read to its -initrd. `exec sleep`
// keeps the pid QEMU's, as the lab's timeout expects of the real one.
const FAKE_QEMU = `#!/bin/bash
while [ $# -gt 0 ]; do
  case $1 in
    -kernel) mode=$2 ;;
    -initrd) seen=$2 ;;
    local,id=labfs,path=*) run=\${1#local,id=labfs,path=}; run=\${run%%,security_model=none} ;;
  esac
  shift
done
cp "$run/env" "$run/cmd.sh" "$seen"/ 2>/dev/null
n=$(cat "$run/boots" 2>/dev/null || echo 0); echo $((n + 1)) >"$run/boots"
echo "lab: guest kernel up"
case $mode in
  ok) echo 'lab: ready'; echo 'hello from the command'; echo 7 >"$run/rc"; echo 'lab: command exited 7' ;;
  fail) echo 'lab: FAIL module vfio-pci did not load: insmod: bad'; echo 'module vfio-pci did not load: insmod: bad' >"$run/failed" ;;
  noboot) echo 'Run /init as init process' ;;
  panic-once) if [ "$n" = 0 ]; then echo 'Kernel panic - not syncing: timer'; else echo 'lab: ready'; echo 0 >"$run/rc"; fi ;;
  refuse) echo "qemu-system-x86_64: -device foo: 'foo' is not a valid device model name" >&2; exit 1 ;;
  silent) echo 'lab: ready' ;;
  hang) echo 'lab: ready'; exec sleep 60 ;;
esac
`;

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-lab-run-'));
  fs.mkdirSync(path.join(tmp, 'bin'));
  fs.writeFileSync(path.join(tmp, 'bin/qemu-system-x86_64'), FAKE_QEMU, { mode: 0o755 });
  fs.mkdirSync(path.join(tmp, 'seen'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function guest(mode: string, extra: Partial<GuestRun> = {}) {
  const cache = fs.mkdtempSync(path.join(tmp, 'cache-'));
  const said: string[] = [];
  const lines: string[] = [];
  const run: GuestRun = {
    cache,
    layout: (runDir) =>
      layOut([parseDeviceSpec('nvme,size=8K'), parseDeviceSpec('ivshmem,size=4K')], {
        runDir,
        fileSize: () => 0,
      }),
    machine: {
      qemu: path.join(tmp, 'bin/qemu-system-x86_64'),
      kernel: mode,
      initramfs: path.join(tmp, 'seen'),
      memoryMiB: 512,
      append: '',
      extra: [],
    },
    command: () => ({ argv: ['true'], cwd: '/', env: { A: 'b' }, path: '/bin' }),
    keep: () => ['/tmp/p'],
    keepFiles: new Map(),
    timeoutSeconds: 30,
    say: (l) => said.push(l),
    console: (l) => lines.push(l),
    ...extra,
  };
  return { run, cache, said, lines };
}

const failure = (p: Promise<unknown>): Promise<LabError> =>
  p.then(
    () => {
      throw new Error('the run did not fail');
    },
    (e: LabError) => e,
  );

test("the command's status from the rc file, the console relayed, the run directory gone and its console kept", async () => {
  const shm = path.join(tmp, 'shm.bin');
  const g = guest('ok', { keepFiles: new Map([['ivshmem', shm]]) });
  const r = await runGuest(g.run);
  expect(r).toMatchObject({ status: 7, bootSeconds: expect.any(Number), commandSeconds: expect.any(Number) });
  expect(g.lines).toEqual([
    'lab: guest kernel up',
    'lab: ready',
    'hello from the command',
    'lab: command exited 7',
  ]);
  // The guest's own "command exited 7" is not said a second time.
  expect(g.said).toEqual([expect.stringMatching(/^boot took/), expect.stringMatching(/^command took/)]);
  expect(fs.readdirSync(g.cache).sort()).toEqual(['last-console.log']);
  expect(fs.readFileSync(path.join(g.cache, 'last-console.log'), 'utf8')).toContain('hello from the command');
  expect(fs.statSync(shm).size).toBe(4096); // the copy asked for
  const env = fs.readFileSync(path.join(tmp, 'seen/env'), 'utf8');
  expect(env).toMatch(/^LAB_DEVICES='nvme=1b36:0010@0000:00:03.0 ivshmem=1af4:1110@0000:00:04.0'$/m);
  expect(fs.readFileSync(path.join(tmp, 'seen/cmd.sh'), 'utf8')).toContain('export A=b');
});

test("a FAIL line from the guest's init is the error", async () => {
  const e = await failure(runGuest(guest('fail').run));
  expect(e).toMatchObject({
    code: 'ELABGUEST',
    exitStatus: 1,
    message: 'module vfio-pci did not load: insmod: bad',
  });
});

test('a guest that never reaches init, and QEMU refusing its command line', async () => {
  expect(await failure(runGuest(guest('noboot').run))).toMatchObject({
    code: 'ELABBOOT',
    message: "the guest did not boot (no 'lab: ready' from its init; qemu exit status 0)",
  });
  const e = await failure(runGuest(guest('refuse').run));
  expect(e.message).toMatch(
    /qemu exit status 1: qemu-system-x86_64: -device foo: 'foo' is not a valid device model name\)$/,
  );
  expect(e.hint).toMatch(/check the --device and --qemu options/);
});

test('a command that never reports its status', async () => {
  expect(await failure(runGuest(guest('silent').run))).toMatchObject({
    code: 'ELABBOOT',
    message: 'the command did not report an exit status (qemu exit status 0)',
  });
});

test('a kernel panic before init: booted once more', async () => {
  const g = guest('panic-once');
  expect((await runGuest(g.run)).status).toBe(0);
  expect(g.said[0]).toBe('the guest kernel panicked while booting; booting it once more');
});

test('the timeout kills the guest: exit 124, naming the phase', async () => {
  const e = await failure(runGuest(guest('hang', { timeoutSeconds: 1 }).run));
  expect(e).toMatchObject({
    code: 'ETIMEDOUT',
    exitStatus: 124,
    message: 'timed out after 1s during the command phase',
  });
});

test('a guest that stops running while the command runs: the monitor asked, exit 75, long before the timeout', async () => {
  const g = guest('hang', { stallSeconds: 1.5 });
  const started = Date.now();
  const e = await failure(runGuest(g.run));
  expect(Date.now() - started).toBeLessThan(15_000);
  expect(e).toMatchObject({ code: 'ELABSTALL', exitStatus: 75 });
  expect(e.message).toMatch(/^the guest stopped running during the command: QEMU used no CPU for 1.5 s/);
  expect(g.said).toContain('the guest stopped running (QEMU used no CPU for 1.5 s); what its monitor says:');
  // The stand-in has no monitor: each question is answered by the connection's error, then the threads.
  expect(g.said).toContain('  (qemu) info registers');
  expect(g.said.some((l) => /^ {2}thread \d+ sleep wchan=/.test(l))).toBe(true);
  expect(fs.readFileSync(path.join(g.cache, 'last-console.log'), 'utf8')).toMatch(
    /^lab-stall: \(qemu\) info lapic$/m,
  );
});

test('an abort shuts the guest down', async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 300);
  const e = await runGuest(guest('hang', { signal: ac.signal }).run).then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(AbortError);
  expect(e).toMatchObject({
    name: 'AbortError',
    code: 'ABORT_ERR',
    message: 'the lab run (the guest was shut down) was aborted',
  });
  expect(reportFailure(e).exit).toBe(130);
});

describe('locks', () => {
  test('a second holder waits, is told, and gives up after its wait with ELABLOCK; a released lock is free', async () => {
    const file = path.join(tmp, 'guest.lock');
    const first = await FileLock.acquire(file, { waitSeconds: 1, what: 'another lab guest' });
    expect(first.waited).toBe(0);
    let told = 0;
    const e = await failure(
      FileLock.acquire(file, { waitSeconds: 1, what: 'another lab guest', onWait: () => told++ }),
    );
    expect(e).toMatchObject({ code: 'ELABLOCK', message: `waited 1 s for another lab guest (${file})` });
    expect(told).toBe(1);
    const later = FileLock.acquire(file, { waitSeconds: 10, what: 'x' });
    setTimeout(() => first.lock.release(), 200);
    const second = await later;
    expect(second.waited).toBeGreaterThan(0.1);
    second.lock.release();
    second.lock.release(); // idempotent
  });
});
