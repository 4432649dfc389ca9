/**
 * What building the lab's kernel needs on the host, and the processes it runs: the compiler and
 * Kbuild's tools (installed with apt when missing and root, as the lab's QEMU is), and a runner
 * that sends a long tool's output to a log, can be stopped with its children, and says on failure
 * what the log's last lines were.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { LabError, unprovisionable } from './errors';

/** A build tool: a command on PATH or a file, and the Debian package that has it. */
export interface BuildTool {
  what: string;
  /** A command looked for on PATH, or an absolute file. */
  probe: string;
  pkg: string;
}

/**
 * What a kernel build runs: the compiler and make, Kbuild's parser generators and bc, perl for
 * its scripts, libelf's headers for objtool (the ORC unwinder), zstd to compress the image, and
 * tar, xz and dpkg-deb to unpack the source package.
 */
export const BUILD_TOOLS: readonly BuildTool[] = [
  { what: 'gcc', probe: 'gcc', pkg: 'gcc' },
  { what: 'make', probe: 'make', pkg: 'make' },
  { what: 'the C library headers', probe: '/usr/include/stdio.h', pkg: 'libc6-dev' },
  { what: 'flex', probe: 'flex', pkg: 'flex' },
  { what: 'bison', probe: 'bison', pkg: 'bison' },
  { what: 'bc', probe: 'bc', pkg: 'bc' },
  { what: 'perl', probe: 'perl', pkg: 'perl' },
  { what: "libelf's headers", probe: '/usr/include/gelf.h', pkg: 'libelf-dev' },
  { what: 'zstd', probe: 'zstd', pkg: 'zstd' },
  { what: 'xz', probe: 'xz', pkg: 'xz-utils' },
  { what: 'tar', probe: 'tar', pkg: 'tar' },
  { what: 'dpkg-deb', probe: 'dpkg-deb', pkg: 'dpkg' },
];

/** How a host is probed (the real one, or a fake in tests). */
export interface HostTools {
  has(probe: string): boolean;
}

/** The real host: a command on PATH, or a file. */
export const realHost: HostTools = {
  has: (probe) =>
    probe.startsWith('/')
      ? fs.existsSync(probe)
      : (process.env['PATH'] ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, probe))),
};

/** missingBuildTools: the tools of {@link BUILD_TOOLS} the host lacks. */
export function missingBuildTools(host: HostTools = realHost): BuildTool[] {
  return BUILD_TOOLS.filter((t) => !host.has(t.probe));
}

/**
 * ensureBuildTools: every build tool present, installed with apt when missing (as root).
 * @throws LabError ELABPROVISION (exit 3) naming what is missing, with the apt command as the hint
 */
export function ensureBuildTools(say: (line: string) => void, host: HostTools = realHost): void {
  const missing = missingBuildTools(host);
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map((t) => t.pkg))];
  const fix = `sudo apt-get update && sudo apt-get install -y ${pkgs.join(' ')}`;
  const why = `building the lab's kernel needs ${missing.map((t) => t.what).join(', ')}`;
  if (!host.has('apt-get'))
    throw unprovisionable(`${why}, and this host has no apt-get`, `install ${pkgs.join(' ')}`);
  if (process.getuid?.() !== 0) throw unprovisionable(`${why}; installing them needs root`, fix);
  say(`installing ${pkgs.join(' ')} to build the kernel`);
  const install = (): number | null =>
    spawnSync('apt-get', ['install', '-y', '-q', ...pkgs], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      stdio: ['ignore', 'ignore', 'inherit'],
    }).status;
  if (install() !== 0) {
    spawnSync('apt-get', ['update', '-q'], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (install() !== 0) throw unprovisionable(`apt-get install ${pkgs.join(' ')} failed`, fix);
  }
  const still = missingBuildTools(host);
  if (still.length > 0)
    throw unprovisionable(`${still.map((t) => t.what).join(', ')} still missing after apt-get install`, fix);
}

/** The last `n` lines of a file, or nothing when it cannot be read. */
export function tail(file: string, n: number): string[] {
  try {
    const size = fs.statSync(file).size;
    const fd = fs.openSync(file, 'r');
    try {
      const len = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8').split('\n').filter(Boolean).slice(-n);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return [];
  }
}

/** One step of a build: a tool, its arguments, where it runs, and what to call it in messages. */
export interface Step {
  cmd: string;
  args: readonly string[];
  cwd?: string;
  what: string;
  env?: NodeJS.ProcessEnv;
}

/** What {@link runStep} reports while a step runs. */
export interface StepHooks {
  /** The build's log, which the step's output is appended to. */
  log: string;
  signal?: AbortSignal;
  /** Every `everyMs`, the seconds so far and the log's last line. */
  progress?: { everyMs: number; report: (seconds: number, last: string) => void };
}

/**
 * runStep: run a build step with its output appended to the log. Its process group is killed
 * when `signal` aborts.
 * @throws LabError EKBUILD when it fails (the message holds the log's last lines), ECANCELED when stopped
 */
export function runStep(step: Step, hooks: StepHooks): Promise<void> {
  const fd = fs.openSync(hooks.log, 'a');
  fs.writeSync(fd, `\n$ ${[step.cmd, ...step.args].join(' ')}\n`);
  const t0 = performance.now();
  return new Promise<void>((resolve, reject) => {
    const child = spawn(step.cmd, step.args, {
      cwd: step.cwd,
      env: step.env ?? process.env,
      stdio: ['ignore', fd, fd],
      detached: true,
    });
    const kill = (): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
    };
    hooks.signal?.addEventListener('abort', kill, { once: true });
    const ticker =
      hooks.progress &&
      setInterval(() => {
        hooks.progress!.report((performance.now() - t0) / 1000, tail(hooks.log, 1)[0] ?? '');
      }, hooks.progress.everyMs);
    const done = (err: LabError | null): void => {
      if (ticker) clearInterval(ticker);
      hooks.signal?.removeEventListener('abort', kill);
      fs.closeSync(fd);
      if (err) reject(err);
      else resolve();
    };
    child.once('error', (e) =>
      done(
        new LabError({
          message: `${step.what}: cannot run ${step.cmd}: ${e.message}`,
          code: (e as NodeJS.ErrnoException).code ?? 'ENOENT',
          hint: `install ${step.cmd}`,
        }),
      ),
    );
    child.once('close', (code, sig) => {
      if (code === 0) return done(null);
      if (hooks.signal?.aborted)
        return done(new LabError({ message: `${step.what}: stopped`, code: 'ECANCELED', exitStatus: 130 }));
      const lines = tail(hooks.log, 25);
      done(
        new LabError({
          message:
            `${step.what} failed (${step.cmd} ${code !== null ? `exited ${code}` : `killed by ${sig}`}); ` +
            `the end of its log:\n${lines.map((l) => `  ${l}`).join('\n')}`,
          code: 'EKBUILD',
          hint: `the whole log is ${hooks.log}`,
        }),
      );
    });
  });
}

/**
 * childCpuSeconds: the CPU time (user and system) of this process's children that have ended and
 * been waited for, and theirs: /proc/self/stat's cutime and cstime. The difference across a build
 * is what the build cost, however busy the machine was.
 */
export function childCpuSeconds(stat: string = fs.readFileSync('/proc/self/stat', 'utf8')): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 16 and 17 of proc(5), counted from the state (field 3) here; in clock ticks of 1/100 s.
  return (Number(fields[13]) + Number(fields[14])) / 100;
}
