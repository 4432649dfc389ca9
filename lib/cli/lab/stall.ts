/**
 * A lab guest that stopped running, seen from outside it. Two kinds:
 * - still: QEMU alive but using no CPU at all, its guest never woken again (no timer inside it
 *   fires, so not even the guest's own `timeout` ends the command). A Linux guest that is merely
 *   idle still wakes for its timers, and under TCG each wake costs QEMU CPU time; so CPU time
 *   standing still for a minute and a half is a hang, not idleness. This file watches for it.
 * - stuck: QEMU busy, its CPU at one instruction never taking the interrupt waiting for it, and
 *   not moved by kicks (stuck.ts watches for it).
 * When either happens the watch asks QEMU's monitor what the guest's CPUs were doing (registers,
 * local APIC, interrupt controllers; when stuck, the words on the stack too), names the kernel
 * symbols when the kernel's System.map is at hand, and hands the picture over, so the run can end
 * at once with it instead of at --timeout with nothing.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';

/** The monitor commands whose answers make the picture. */
export const STALL_COMMANDS = [
  'info status',
  'info cpus',
  'info registers',
  'info lapic',
  'info pic',
  'info irq',
];

/** How a watch is set up. */
export interface StallWatchOptions {
  /** QEMU's pid. */
  pid: number;
  /** QEMU's human monitor socket (`-monitor unix:PATH,server,nowait`), or null without one. */
  monitor: string | null;
  /** The guest kernel's code symbols (lazySymbols), or null without a System.map: to name addresses. */
  symbols: () => Symbols | null;
  /** Seconds of unchanged CPU time that make a stall. */
  stillSeconds: number;
  /** How often CPU time is read, in seconds (10, or a third of stillSeconds if that is less). */
  pollSeconds?: number;
  /** Whether the run is in a phase where a stall counts (the command running). */
  counting: () => boolean;
  /** Called once, with the picture, when the guest stalled. */
  onStall: (picture: string[]) => void;
}

/** How a guest stopped running: its CPU idle for good, or stuck at one instruction (see above). */
export type StallKind = 'still' | 'stuck';

/** QEMU's user + system CPU time, in clock ticks, or null once it is gone. */
export function cpuTicks(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the command name (which may hold spaces) start at the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

/** Starts watching; returns the function that stops it. */
export function watchStall(o: StallWatchOptions): () => void {
  let last = cpuTicks(o.pid);
  let still = 0;
  let fired = false;
  const poll = o.pollSeconds ?? Math.min(10, o.stillSeconds / 3);
  const timer = setInterval(() => {
    const now = cpuTicks(o.pid);
    if (now === null) return;
    still = now === last && o.counting() ? still + poll : 0;
    last = now;
    if (still < o.stillSeconds || fired) return;
    fired = true;
    clearInterval(timer);
    void stallPicture(o).then(o.onStall);
  }, poll * 1000);
  timer.unref();
  return () => clearInterval(timer);
}

/** Where a CPU was, from the monitor's `info registers`. */
export interface CpuPoint {
  rip: bigint;
  rsp: bigint;
  /** RFLAGS.IF: whether the CPU takes interrupts. */
  interrupts: boolean;
  /** Halted (HLT=1): waiting for an interrupt, as an idle guest does. */
  halted: boolean;
}

/** The first CPU's point in an `info registers` answer, or null if it has none. */
export function cpuPoint(answer: readonly string[]): CpuPoint | null {
  const text = answer.join(' ');
  const reg = (name: string): bigint | null => {
    const m = new RegExp(`\\b${name}=([0-9a-f]+)`, 'i').exec(text);
    return m ? BigInt(`0x${m[1]}`) : null;
  };
  const rip = reg('RIP');
  const rsp = reg('RSP');
  const rfl = reg('RFL');
  if (rip === null || rsp === null || rfl === null) return null;
  return { rip, rsp, interrupts: (rfl & 0x200n) !== 0n, halted: /\bHLT=1\b/.test(text) };
}

/** The vectors requested in a local APIC and not yet taken (its IRR), from `info lapic`. */
export function pendingVectors(answer: readonly string[]): number[] {
  const irr = answer.find((l) => /^IRR\b/.test(l));
  return irr === undefined ? [] : (irr.slice(3).match(/\d+/g) ?? []).map(Number);
}

/**
 * What the monitor says about the stalled guest, and QEMU's threads' wait channels. With `stack`,
 * the kernel code addresses among the 64 words on the CPU's stack too: the calls that led to it.
 */
export async function stallPicture(
  o: Pick<StallWatchOptions, 'pid' | 'monitor' | 'symbols'>,
  stack = false,
): Promise<string[]> {
  const out: string[] = [];
  const symbols = o.symbols();
  if (o.monitor !== null) {
    for (const c of STALL_COMMANDS) {
      // The FPU, vector and debug registers say nothing about a stall: left out.
      const answer = (await monitorCommand(o.monitor, c)).filter(
        (l) => !/^(FPR|XMM|YMM|ZMM|DR[0-9]|FCW)/.test(l),
      );
      out.push(`(qemu) ${c}`, ...answer);
      const at = c === 'info registers' ? cpuPoint(answer) : null;
      if (at === null || symbols === null) continue;
      const sym = symbolIn(symbols, at.rip);
      if (sym !== null) out.push(`RIP is in ${sym}`);
      if (!stack) continue;
      const words = await monitorCommand(o.monitor, `x /64gx 0x${at.rsp.toString(16)}`);
      for (const w of words.join(' ').match(/\b0x[0-9a-f]{16}\b/gi) ?? []) {
        const name = symbolIn(symbols, BigInt(w), 0x10000n);
        if (name !== null) out.push(`stack: ${w} ${name}`);
      }
    }
  } else {
    out.push('no monitor socket: only the threads');
  }
  try {
    for (const t of fs.readdirSync(`/proc/${o.pid}/task`)) {
      const read = (f: string): string => fs.readFileSync(`/proc/${o.pid}/task/${t}/${f}`, 'latin1').trim();
      out.push(`thread ${t} ${read('comm')} wchan=${read('wchan')}`);
    }
  } catch {
    out.push('QEMU is gone');
  }
  return out;
}

/** The cursor-moving escapes QEMU's readline writes around its echo. */
const TERMINAL_ESCAPES = new RegExp(`${String.fromCharCode(0x1b)}\\[[0-9;]*[A-Za-z]`, 'g');

/** One human-monitor command's answer, its lines without the banner and prompts (5 s at most). */
export function monitorCommand(socket: string, command: string): Promise<string[]> {
  return new Promise((resolve) => {
    let text = '';
    let sent = false;
    const c = net.connect(socket);
    const done = (extra?: string): void => {
      clearTimeout(timer);
      c.destroy();
      const lines = text
        .replace(TERMINAL_ESCAPES, '')
        .split(/\r?\n/)
        .map((l) => l.trimEnd())
        .filter((l) => l !== '' && !l.startsWith('QEMU ') && !l.startsWith('(qemu)'));
      resolve(extra === undefined ? lines : [...lines, extra]);
    };
    const timer = setTimeout(() => done(`(no complete answer to '${command}' within 5 s)`), 5000);
    c.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      // The banner ends with the first prompt; the answer with the next one.
      const prompts = text.split('(qemu)').length - 1;
      if (!sent && prompts >= 1) {
        sent = true;
        text = '';
        c.write(`${command}\n`);
      } else if (sent && prompts >= 1 && /\(qemu\)\s*$/.test(text)) {
        text = text.slice(text.indexOf('\n') + 1);
        done();
      }
    });
    c.on('error', (e) => done(`(monitor: ${e.message})`));
  });
}

/** A System.map's code symbols, by address. */
export type Symbols = readonly { at: bigint; name: string }[];

/** The code symbols of a System.map, sorted by address; empty if it cannot be read. */
export function loadSymbols(systemMap: string): Symbols {
  let text: string;
  try {
    text = fs.readFileSync(systemMap, 'latin1');
  } catch {
    return [];
  }
  const out: { at: bigint; name: string }[] = [];
  for (const line of text.split('\n')) {
    const [hex, type, name] = line.split(' ');
    if (name && /^[tTwW]$/.test(type)) out.push({ at: BigInt(`0x${hex}`), name });
  }
  return out.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
}

/**
 * The code symbol that holds `address` (as symbol+0xoffset), or null: below the first symbol, or,
 * with `within`, further than that past the nearest one (not code: a number on a stack, say).
 */
export function symbolIn(symbols: Symbols, address: bigint, within?: bigint): string | null {
  let lo = 0;
  let hi = symbols.length - 1;
  let best = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (symbols[mid].at <= address) {
      best = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  if (best < 0) return null;
  const off = address - symbols[best].at;
  if (within !== undefined && off >= within) return null;
  return `${symbols[best].name}+0x${off.toString(16)}`;
}

/**
 * The code symbols of `systemMap` (null without one), read at the first call and kept: a lab run
 * that never stalls never reads the file.
 */
export function lazySymbols(systemMap: string | null): () => Symbols | null {
  let symbols: Symbols | null | undefined;
  return () => (symbols ??= systemMap !== null ? loadSymbols(systemMap) : null);
}
