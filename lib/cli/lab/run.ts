/**
 * One lab guest, booted and watched: the run directory (the plan for init, the command script,
 * backing files), QEMU under a timeout, the console relayed line by line, and the verdict. The
 * exit status is taken only from the `rc` file the guest writes after the command ends, so a run
 * can never pass because nothing ran; everything else is a LabError naming what went wrong.
 */
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';

import { AbortError } from '../../base/error';
import { EXIT_STALLED, EXIT_TIMEOUT, LabError } from './errors';
import type { Layout } from './layout';
import { commandScript, guestPlan, qemuArgs, type CommandOptions, type MachineOptions } from './machine';
import { lazySymbols, watchStall, type StallKind } from './stall';
import { watchStuck } from './stuck';

/** What a guest run needs. */
export interface GuestRun {
  cache: string;
  /** The devices, laid out for the run directory this run makes. */
  layout: (runDir: string) => Layout;
  machine: Omit<MachineOptions, 'runDir'>;
  /** The command and its environment, which names the devices of the layout. */
  command: (layout: Layout) => CommandOptions;
  /** Host paths under /tmp the guest must still see (the project, files the user named). */
  keep: (layout: Layout) => string[];
  /** Copies of backing files to keep after the run: role to path. */
  keepFiles: ReadonlyMap<string, string>;
  timeoutSeconds: number;
  /** Seconds of QEMU CPU time standing still while the command runs that make a stalled guest (90). */
  stallSeconds?: number;
  /** Seconds of a silent console after which the CPU is sampled for being stuck (5; stuck.ts). */
  stuckQuietSeconds?: number;
  /** A progress line of the lab's own. */
  say: (line: string) => void;
  /** A line of the guest's console: the command's output. */
  console: (line: string) => void;
  signal?: AbortSignal;
}

/** How a run ended when the command reported its status. */
export interface GuestResult {
  status: number;
  bootSeconds: number;
  commandSeconds: number;
  /** The devices as they were laid out (their files are gone with the run directory). */
  layout: Layout;
}

/** What one boot saw. */
interface Boot {
  started: number;
  ready: number | null;
  done: number | null;
  /** The guest's own "lab: command exited N" line, once it printed it. */
  doneLine: string | null;
  ended: number;
  qemuStatus: number | null;
  timedOut: boolean;
  aborted: boolean;
  /** QEMU's own last complaint on stderr, if any. */
  qemuSaid: string | null;
  /** What the monitor said when the guest stopped running (see stall.ts), or null. */
  stalled: { kind: StallKind; picture: string[] } | null;
  /** When the console last said something (performance.now()). */
  spoke: number;
}

/**
 * Seconds of QEMU CPU time standing still, while the command runs, that make a stalled guest: an
 * idle Linux guest under TCG still costs QEMU CPU time every few seconds (its timers).
 */
const STALL_SECONDS = 90;

/** Where the guest's kernel keeps its symbols: System.map-VERSION beside vmlinuz-VERSION. */
function systemMapOf(kernel: string): string | null {
  const base = path.basename(kernel);
  if (!base.startsWith('vmlinuz-')) return null;
  const map = path.join(path.dirname(kernel), `System.map-${base.slice('vmlinuz-'.length)}`);
  return fs.existsSync(map) ? map : null;
}

const seconds = (a: number, b: number): number => Math.round((b - a) / 100) / 10;

/** Fills `file` with `size` random bytes, a MiB at a time. */
function randomFile(file: string, size: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    const chunk = Buffer.alloc(Math.min(size, 1 << 20));
    for (let done = 0; done < size; done += chunk.length) {
      randomFillSync(chunk);
      fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - done));
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The run directory's contents before the boot: backing files, the plan, the command script. */
function prepare(run: GuestRun, runDir: string): Layout {
  const layout = run.layout(runDir);
  for (const d of layout.devices) {
    if (d.dir) fs.mkdirSync(d.dir);
    if (d.file?.make === 'random') randomFile(d.file.path, d.file.size);
    if (d.file?.make === 'zero') {
      fs.writeFileSync(d.file.path, '');
      fs.truncateSync(d.file.path, d.file.size);
    }
  }
  fs.writeFileSync(path.join(runDir, 'env'), guestPlan(layout, runDir, run.keep(layout), run.timeoutSeconds));
  fs.writeFileSync(path.join(runDir, 'cmd.sh'), commandScript(run.command(layout)));
  return layout;
}

/** Boots the guest once, relaying its console; resolves when QEMU has exited. */
function boot(run: GuestRun, args: string[], consoleLog: string, monitor: string | null): Promise<Boot> {
  const b: Boot = {
    started: performance.now(),
    ready: null,
    done: null,
    doneLine: null,
    ended: 0,
    qemuStatus: null,
    timedOut: false,
    aborted: false,
    qemuSaid: null,
    stalled: null,
    spoke: performance.now(),
  };
  const log = fs.openSync(consoleLog, 'a');
  return new Promise((resolve, reject) => {
    const qemu = spawn(run.machine.qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let killer: NodeJS.Timeout | undefined;
    const stop = (): void => {
      qemu.kill('SIGTERM');
      killer = setTimeout(() => qemu.kill('SIGKILL'), 10_000);
    };
    const timer = setTimeout(() => {
      b.timedOut = true;
      stop();
    }, run.timeoutSeconds * 1000);
    const onAbort = (): void => {
      b.aborted = true;
      stop();
    };
    run.signal?.addEventListener('abort', onAbort, { once: true });
    const still = run.stallSeconds ?? STALL_SECONDS;
    const symbols = lazySymbols(systemMapOf(run.machine.kernel));
    const stalled = (kind: StallKind, picture: string[]): void => {
      if (b.stalled !== null) return;
      b.stalled = { kind, picture };
      const how = kind === 'still' ? `QEMU used no CPU for ${still} s` : 'its CPU stuck at one instruction';
      run.say(`the guest stopped running (${how}); what its monitor says:`);
      for (const line of picture) {
        fs.writeSync(log, `lab-stall: ${line}\n`);
        run.say(`  ${line}`);
      }
      stop();
    };
    const counting = (): boolean => b.ready !== null && b.done === null;
    const unwatch: (() => void)[] = [];
    if (qemu.pid !== undefined) {
      unwatch.push(
        watchStall({
          pid: qemu.pid,
          monitor,
          symbols,
          stillSeconds: still,
          counting,
          onStall: (picture) => stalled('still', picture),
        }),
      );
      if (monitor !== null)
        unwatch.push(
          watchStuck({
            pid: qemu.pid,
            monitor,
            symbols,
            counting,
            quietSince: () => b.spoke,
            ...(run.stuckQuietSeconds !== undefined ? { quietSeconds: run.stuckQuietSeconds } : {}),
            onKick: (line) => {
              fs.writeSync(log, `lab-stuck: ${line}\n`);
              run.say(line);
            },
            onStuck: (picture) => stalled('stuck', picture),
          }),
        );
    }
    const relay = (stream: NodeJS.ReadableStream, fromQemu: boolean): Promise<void> => {
      const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
      lines.on('line', (raw) => {
        const line = raw.replace(/\r$/, '');
        if (line === 'lab: ready') b.ready = performance.now();
        else if (line.startsWith('lab: command exited ')) {
          b.done = performance.now();
          b.doneLine = line;
        }
        if (fromQemu && line.trim() !== '') b.qemuSaid = line;
        // The guest's console only: QEMU itself talks while its guest is stuck (slirp, say).
        if (!fromQemu) b.spoke = performance.now();
        fs.writeSync(log, `${line}\n`);
        run.console(line);
      });
      return new Promise((r) => lines.once('close', r));
    };
    const relayed = Promise.all([relay(qemu.stdout, false), relay(qemu.stderr, true)]);
    qemu.once('error', (e) => {
      unwatch.forEach((u) => u());
      clearTimeout(timer);
      fs.closeSync(log);
      reject(
        new LabError({
          message: `cannot start ${run.machine.qemu}: ${e.message}`,
          code: (e as NodeJS.ErrnoException).code ?? 'ENOENT',
          hint: 'install QEMU (qemu-system-x86 on Debian)',
        }),
      );
    });
    qemu.once('exit', (code, sig) => {
      unwatch.forEach((u) => u());
      clearTimeout(timer);
      clearTimeout(killer);
      run.signal?.removeEventListener('abort', onAbort);
      void relayed.then(() => {
        fs.closeSync(log);
        b.ended = performance.now();
        b.qemuStatus = code ?? (sig ? 128 : null);
        resolve(b);
      });
    });
  });
}

/** The run's verdict: the command's status, or the LabError that says what went wrong. */
function verdict(run: GuestRun, b: Boot, runDir: string, lastConsole: string): Omit<GuestResult, 'layout'> {
  const read = (f: string): string | null => {
    try {
      return fs.readFileSync(path.join(runDir, f), 'utf8').trim();
    } catch {
      return null;
    }
  };
  const rc = read('rc');
  if (rc !== null && rc !== '') {
    if (!/^[0-9]+$/.test(rc))
      throw new LabError({ message: `the guest wrote a malformed exit status: ${rc}`, code: 'ELABBOOT' });
    return {
      status: Number(rc),
      bootSeconds: seconds(b.started, b.ready!),
      commandSeconds: seconds(b.ready!, b.done ?? b.ended),
    };
  }
  const where = `console in ${lastConsole}`;
  if (b.aborted) throw new AbortError('the lab run (the guest was shut down)', run.signal?.reason);
  if (b.stalled !== null) {
    const how =
      b.stalled.kind === 'still'
        ? `QEMU used no CPU for ${run.stallSeconds ?? STALL_SECONDS} s and no timer in the guest fired`
        : 'its CPU stayed at one instruction, never taking the interrupt waiting in its local APIC, though kicked three times';
    throw new LabError({
      message:
        `the guest stopped running during the command: ${how} ` +
        '(a hang of the emulator or of the guest kernel, not a verdict on the command)',
      code: 'ELABSTALL',
      hint: `the monitor's picture of its CPUs is above and in the console (lab-stall: lines); run it again (${where})`,
      exitStatus: EXIT_STALLED,
    });
  }
  if (b.timedOut) {
    throw new LabError({
      message: `timed out after ${run.timeoutSeconds}s during the ${b.ready === null ? 'boot' : 'command'} phase`,
      code: 'ETIMEDOUT',
      hint: `give a longer --timeout (${where})`,
      exitStatus: EXIT_TIMEOUT,
    });
  }
  const failed = read('failed');
  const failLine = fs
    .readFileSync(path.join(runDir, 'console.log'), 'latin1')
    .split('\n')
    .filter((l) => l.startsWith('lab: FAIL '))
    .at(-1);
  if (failed || failLine) {
    throw new LabError({
      message: failed || failLine!.slice('lab: FAIL '.length),
      code: 'ELABGUEST',
      hint: `the guest's init stopped there (${where})`,
    });
  }
  if (b.ready === null) {
    const said = b.qemuStatus !== 0 && b.qemuSaid ? `: ${b.qemuSaid}` : '';
    throw new LabError({
      message: `the guest did not boot (no 'lab: ready' from its init; qemu exit status ${b.qemuStatus}${said})`,
      code: 'ELABBOOT',
      hint: said ? 'QEMU refused its command line: check the --device and --qemu options' : where,
    });
  }
  throw new LabError({
    message: `the command did not report an exit status (qemu exit status ${b.qemuStatus})`,
    code: 'ELABBOOT',
    hint: where,
  });
}

/**
 * runGuest: boot the lab guest for `run` and wait for its command. A guest whose kernel panics
 * before init ran (TCG on a loaded host has made it: a boot-time timer check, an int3) is booted
 * once more, since nothing of the command ran. The run directory goes at the end; the console of
 * the last run stays in the cache as last-console.log.
 * @throws LabError as {@link verdict} says
 */
export async function runGuest(run: GuestRun): Promise<GuestResult> {
  const runDir = fs.mkdtempSync(path.join(run.cache, 'run.'));
  const consoleLog = path.join(runDir, 'console.log');
  const lastConsole = path.join(run.cache, 'last-console.log');
  let layout: Layout | undefined;
  try {
    layout = prepare(run, runDir);
    // The human monitor, for the picture of a stalled guest (a unix socket path is at most 107 bytes).
    const socket = path.join(runDir, 'monitor.sock');
    const monitor = socket.length < 100 ? socket : null;
    const args = [
      ...qemuArgs(layout, { ...run.machine, runDir }),
      ...(monitor !== null ? ['-monitor', `unix:${monitor},server,nowait`] : []),
    ];
    let b = await boot(run, args, consoleLog, monitor);
    const text = (): string => fs.readFileSync(consoleLog, 'latin1');
    if (
      b.ready === null &&
      !b.timedOut &&
      !b.aborted &&
      !fs.existsSync(path.join(runDir, 'failed')) &&
      text().includes('Kernel panic') &&
      !/^lab: FAIL /m.test(text())
    ) {
      run.say('the guest kernel panicked while booting; booting it once more');
      fs.renameSync(consoleLog, path.join(runDir, 'console.first-boot.log'));
      b = await boot(run, args, consoleLog, monitor);
    }
    run.say(`boot took ${seconds(b.started, b.ready ?? b.ended)} s`);
    if (b.ready !== null) run.say(`command took ${seconds(b.ready, b.done ?? b.ended)} s`);
    const result = verdict(run, b, runDir, lastConsole);
    // The guest said it already when it is what the run ends with (not a timeout, say).
    if (b.doneLine !== `lab: command exited ${result.status}`) run.say(`command exited ${result.status}`);
    return { ...result, layout };
  } finally {
    if (fs.existsSync(consoleLog)) fs.copyFileSync(consoleLog, lastConsole);
    for (const [role, to] of run.keepFiles) {
      const file = layout?.devices.find((d) => d.role === role)?.file?.path;
      if (file && fs.existsSync(file)) fs.copyFileSync(file, to);
    }
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}
