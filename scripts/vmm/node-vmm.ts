/**
 * The Node VMM side of bench:vmm and of the lab demo: PcMachine (lib/vmm) boots the VMM guest
 * (scripts/vmm/guest-init.sh) with the lab's e1000e and rtl8139 passed through, streams its console
 * as `guest: ...` lines like QEMU's side, and ends with what the machine absorbed and held.
 *
 *   node -r @swc-node/register scripts/vmm/node-vmm.ts --kernel FILE --initrd FILE
 *        [--pings N] [--rtl 8139cp|8139too] [--no-rtl] [--mem MIB] [--cpus N] [--hugepages yes|no]
 *        [--append ARGS] [--timeout SECS] [--reboots N] [--record FILE] [--brief] [--nice N]
 *        [--holds FILE] [--hold-ms MS] [--loop-json FILE] [--backend auto|type1|iommufd]
 *   node -r @swc-node/register scripts/vmm/node-vmm.ts --idle SECS [--label TEXT] [--loop-json FILE]
 *
 * Without --record it boots and shows every line with its time and the exits served so far. With
 * --record FILE it also writes the run record bench-report.ts reads (scripts/vmm/run-record.ts),
 * with the exit counts over each ping run (scripts/vmm/kvm-exit-probe.ts). --brief leaves out
 * the individual ping replies. --nice sets the vCPU threads' nice value; --holds FILE writes each
 * hold of the event loop over 20 ms, or --hold-ms MS (where it began and what the VMM was doing),
 * as JSON: with --hold-ms 7, the holds that make the delay's p99 over 2 ms.
 *
 * With --idle it only watches its own event loop for SECS seconds (0: until SIGTERM) with nothing
 * else to do: the floor the lab allows, which bench.sh measures alone and beside QEMU's run of the
 * same guest. --loop-json writes the loop's delay and ticks for bench-report.ts.
 */
import * as fs from 'node:fs';
// The compiled package, as a VMM built on it loads it: compiling lib/ on the fly would add tens of
// seconds to the start under the lab's TCG (bench.sh checks dist/ is up to date).
import { monitorEventLoopDelay } from 'node:perf_hooks';
import {
  GuestErrorSink,
  PcMachine,
  type GuestError,
  type PcDeviceSpec,
  type PcExit,
  type PcResources,
} from '../../dist';
import { native } from '../../dist/native';
import { PingRunProbe } from './kvm-exit-probe';
import { RecordWriter } from './run-record';
import type { TimedLine } from './guest-console';

const MiB = 2 ** 20;
const HUGE_PAGE = 2 * MiB;

/** Options of {@link runVmmGuest}. */
export interface VmmGuestOptions {
  readonly kernel: string;
  readonly initrd: string;
  /** Host BDFs of the lab's devices. */
  readonly e1000e: string;
  readonly rtl8139?: string;
  /** The RTL8139's guest driver: 8139too sees it as 10ec:8138 and uses port I/O (default 8139cp). */
  readonly rtl?: '8139cp' | '8139too';
  /** Pings per interface (guest.pings; the guest's default when absent). */
  readonly pings?: number;
  readonly memMiB?: number;
  /** vCPUs (default 1). */
  readonly cpus?: number;
  /** The vCPU threads' nice value (PcMachine's vcpuNice). */
  readonly vcpuNice?: number;
  /** The IOMMU backend (PcMachine's `backend`; default auto). */
  readonly backend?: 'auto' | 'type1' | 'iommufd';
  readonly hugepages?: boolean;
  /** More kernel command line. */
  readonly append?: string;
  readonly timeoutMs?: number;
  /** Boot again this many times after the guest resets. */
  readonly reboots?: number;
  /**
   * Each console line with its time (seconds since `t0`). Return a name for what it did if that
   * was the runner's own measuring, not the VMM's work: holds of the loop it caused are charged to it.
   */
  readonly onLine?: (line: TimedLine, pc: PcMachine) => string | void;
  /** The runner's own lines (`vmm: ...`). */
  readonly onEvent?: (text: string) => void;
  /** Where times count from, in performance.now() ms (default: when the runner starts). */
  readonly t0?: number;
  /** A gap between the 5 ms interval's ticks longer than this (ms) is a hold worth naming ({@link HOLD_MS}). */
  readonly holdMs?: number;
}

export interface VmmGuestResult {
  readonly exits: PcExit[];
  readonly lines: TimedLine[];
  readonly reportCounts: PcMachine['reportCounts'];
  readonly servedExits: PcMachine['exits'];
  /** What the machine held after close (all zeros when nothing was left behind). */
  readonly resources: PcResources;
  /** The event loop while the machine existed: from before create to after close. */
  readonly loop: EventLoopFigures;
}

/**
 * Event-loop delay (ms): how late the loop's 10 ms sampling timer fired (Node's histogram holds the
 * whole interval; the 10 ms are taken off), and how often a 5 ms interval fired against how often
 * it should have.
 */
export interface EventLoopFigures {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly ticks: number;
  readonly expectedTicks: number;
  /** Each gap between ticks of the 5 ms interval longer than `holdMs`: where the loop was held. */
  readonly holds: readonly LoopHold[];
  /** When the watch began (performance.now()). */
  readonly startMs: number;
  /** The gap (ms) past which a hold was named. */
  readonly holdMs: number;
  /** How many gaps between ticks of the 5 ms interval fell in each of {@link GAP_BUCKETS} (ms). */
  readonly gaps: readonly number[];
  /** The CPU time the main thread had over the watch (CLOCK_THREAD_CPUTIME_ID), and the watch's length. */
  readonly cpuMs: number;
  readonly wallMs: number;
}

/** The upper bounds (ms) of the tick-gap buckets; the last bucket holds everything longer. */
export const GAP_BUCKETS = [6, 8, 10, 15, 20, 50];

/** One hold of the event loop: from `at` (ms since the watch began) for `ms`, during `where`. */
export interface LoopHold {
  readonly at: number;
  readonly ms: number;
  readonly where: string;
  /**
   * CPU time the main thread had between the two ticks (CLOCK_THREAD_CPUTIME_ID), of their
   * `ms + 5` ms: what it ran, against waiting for a CPU or for its wake-up.
   */
  readonly ranMs: number;
}

/** A gap between two ticks of the 5 ms interval longer than this is a hold worth naming (by default). */
export const HOLD_MS = 20;

const RESOLUTION_MS = 10;

/**
 * Watch the event loop from now until the returned function is called. `where` names what the
 * process is doing (asked at every tick): a hold is charged to what it was doing when it began,
 * unless `during` (asked at the tick that ends it) names something that ran meanwhile.
 */
export function watchEventLoop(
  where: () => string = () => '',
  during: () => string | undefined = () => undefined,
  holdMs = HOLD_MS,
): () => EventLoopFigures {
  // 10 ms sampling (Node's default): a 1 ms timer would itself take the lab's one CPU from the vCPU
  // threads.
  const h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  h.enable();
  const start = performance.now();
  let ticks = 0;
  let last = start;
  const startCpu = native.threadCpuMs();
  let lastCpu = startCpu;
  let lastWhere = where();
  const holds: LoopHold[] = [];
  const gaps = new Array<number>(GAP_BUCKETS.length + 1).fill(0);
  const timer = setInterval(() => {
    ticks++;
    const t = performance.now();
    const b = GAP_BUCKETS.findIndex((u) => t - last <= u);
    gaps[b < 0 ? GAP_BUCKETS.length : b]++;
    const ran = during();
    const cpu = native.threadCpuMs();
    if (t - last > holdMs)
      holds.push({ at: last - start, ms: t - last - 5, where: ran ?? lastWhere, ranMs: cpu - lastCpu });
    last = t;
    lastCpu = cpu;
    lastWhere = where();
  }, 5);
  return () => {
    clearInterval(timer);
    h.disable();
    const ms = (ns: number): number => Math.max(0, ns / 1e6 - RESOLUTION_MS);
    const wallMs = performance.now() - start;
    return {
      p50: ms(h.percentile(50)),
      p99: ms(h.percentile(99)),
      max: ms(h.max),
      ticks,
      expectedTicks: Math.floor(wallMs / 5),
      holds,
      startMs: start,
      holdMs,
      gaps,
      cpuMs: native.threadCpuMs() - startCpu,
      wallMs,
    };
  };
}

/** One line for the event-loop figures, with the targets bench:vmm holds them to. */
export function describeLoop(l: EventLoopFigures): string {
  const share = l.expectedTicks > 0 ? (100 * l.ticks) / l.expectedTicks : 100;
  return (
    `event loop from create to after close: delay p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms, ` +
    `max ${l.max.toFixed(1)} ms; a 5 ms interval fired ${l.ticks} of ${l.expectedTicks} times (${share.toFixed(1)} %) ` +
    `[targets: p99 <= 2 ms, max <= 20 ms, >= 95 %]; the main thread on a CPU ${(l.cpuMs / 1000).toFixed(2)} s ` +
    `of ${(l.wallMs / 1000).toFixed(1)} s`
  );
}

/**
 * Where the loop was held: the holds per phase (count, total, longest) and the longest few, so a
 * missed target names its cause.
 */
export function describeHolds(l: EventLoopFigures, longest = 8): string {
  let lo = 0;
  const buckets = l.gaps.map((n, i) => {
    const hi = GAP_BUCKETS[i];
    const text = hi === undefined ? `>${lo}: ${n}` : `${lo}-${hi}: ${n}`;
    lo = hi;
    return text;
  });
  const gaps = `5 ms interval gaps (ms) ${buckets.join(', ')}`;
  if (l.holds.length === 0) return `${gaps}; no hold of the event loop over ${l.holdMs} ms`;
  const phases = new Map<string, { n: number; total: number; max: number }>();
  for (const h of l.holds) {
    const phase = h.where.split(':')[0];
    const p = phases.get(phase) ?? { n: 0, total: 0, max: 0 };
    p.n++;
    p.total += h.ms;
    p.max = Math.max(p.max, h.ms);
    phases.set(phase, p);
  }
  const per = [...phases].map(([k, p]) => `${k} ${p.n} (${p.total.toFixed(0)} ms, max ${p.max.toFixed(0)})`);
  const top = [...l.holds]
    .sort((a, b) => b.ms - a.ms)
    .slice(0, longest)
    .map(
      (h) =>
        `${h.ms.toFixed(0)} ms (ran ${h.ranMs.toFixed(0)}) at ${(h.at / 1000).toFixed(2)} s in ${h.where}`,
    );
  let wall = 0;
  let ran = 0;
  for (const h of l.holds) {
    wall += h.ms + 5;
    ran += h.ranMs;
  }
  const cpu = `the main thread ran ${ran.toFixed(0)} ms of their ${wall.toFixed(0)}`;
  return `${gaps}; holds over ${l.holdMs} ms: ${l.holds.length} (${cpu}); ${per.join(', ')}; longest: ${top.join('; ')}`;
}

const json = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x));

/** One line for what the machine absorbed. */
export function describeGuestError(e: GuestError): string {
  return `${e.source}/${e.kind}${e.device !== undefined ? ` ${e.device}` : ''}: ${e.message}`;
}

/** Boots the VMM guest under PcMachine until it ends (and reboots it `reboots` times), then closes. */
export async function runVmmGuest(opts: VmmGuestOptions): Promise<VmmGuestResult> {
  const t0 = opts.t0 ?? performance.now();
  const now = (): number => (performance.now() - t0) / 1000;
  const event = (text: string): void => opts.onEvent?.(text);
  const rtl = opts.rtl ?? '8139cp';
  const devices: PcDeviceSpec[] = [{ bdf: opts.e1000e }];
  if (opts.rtl8139 !== undefined) {
    devices.push(rtl === '8139too' ? { bdf: opts.rtl8139, deviceId: 0x8138 } : { bdf: opts.rtl8139 });
  }
  const guest = [`guest.end=reboot`, `guest.rtl=${rtl}`];
  if (opts.pings !== undefined) guest.push(`guest.pings=${opts.pings}`);
  const lines: TimedLine[] = [];
  const exits: PcExit[] = [];
  const shown = new Set<string>();
  let pc: PcMachine | undefined = undefined;
  let phase = 'open';
  let lastLine = '';
  let measured: string | undefined;
  const stopWatch = watchEventLoop(
    () => `${phase}: ${lastLine.slice(0, 60)}`,
    () => {
      const m = measured;
      measured = undefined;
      return m;
    },
    opts.holdMs,
  );
  // Reports waiting to be written, one a turn.
  const queued: GuestError[] = [];
  const printOne = (): void => {
    const e = queued.shift()!;
    const text = describeGuestError(e);
    if (!shown.has(text)) {
      shown.add(text);
      event(`report ${text}`);
    }
    if (queued.length > 0) setImmediate(printOne);
  };
  // The machine's sink, made here so that what the devices report while they open is heard too.
  const guestErrors = new GuestErrorSink({ log: null });
  guestErrors.on('guest-error', (e) => {
    // Refused memory accesses are the guest probing for legacy hardware: counted, not shown. The
    // same report again is only counted.
    // Printed in a turn of its own, as a logger would: a report comes in the middle of the machine's
    // work (a memory transaction, say), and writing the line is this runner's cost, not the VMM's.
    // Several reports of one commit are queued and written one a turn, not all in the same one.
    if (e.source === 'memory') return;
    if (queued.push(e) === 1) setImmediate(printOne);
  });
  pc = await PcMachine.open({
    guestErrors,
    kernel: opts.kernel,
    initrd: opts.initrd,
    cmdline:
      `console=ttyS0 quiet loglevel=3 reboot=k panic=-1 ${guest.join(' ')} ${opts.append ?? ''}`.trim(),
    ramSize: (opts.memMiB ?? 256) * MiB,
    devices,
    cpus: opts.cpus ?? 1,
    ...(opts.vcpuNice !== undefined ? { vcpuNice: opts.vcpuNice } : {}),
    ...(opts.backend !== undefined ? { backend: opts.backend } : {}),
    hugepages: opts.hugepages ?? false,
    onLine: (text) => {
      lastLine = text;
      const line = { t: now(), text };
      lines.push(line);
      if (pc) measured = opts.onLine?.(line, pc) ?? measured;
    },
  });
  event(`machine created in ${now().toFixed(2)} s (IOMMU backend ${pc.machine.backend ?? 'none'})`);
  phase = 'run';
  try {
    event(
      `bars ${pc.bars.map((b) => `${b.slot}.${b.fn} bar${b.bar} ${b.type} 0x${b.address.toString(16)}+0x${b.size.toString(16)}`).join(', ')}`,
    );
    for (let boot = 0; ; boot++) {
      const exit = await pc.run(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {});
      exits.push(exit);
      event(`exit at ${now().toFixed(2)} s: ${json(exit)}`);
      event(`reports ${json(pc.reportCounts)}, unserved exits ${pc.unservedExits}`);
      if (exit.reason !== 'reset' || boot >= (opts.reboots ?? 0)) break;
      phase = 'reboot';
      pc.reboot();
      phase = 'run';
    }
  } finally {
    phase = 'close';
    await pc.closeAsync();
  }
  const loop = stopWatch();
  return {
    loop,
    exits,
    lines,
    reportCounts: pc.reportCounts,
    servedExits: pc.exits,
    resources: pc.resources(),
  };
}

// ---- the command line ----------------------------------------------------------------------------

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) throw new Error(`node-vmm: --${name} is required`);
  return fallback;
}

function count(name: string, fallback: string): number {
  const v = Number(arg(name, fallback));
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`node-vmm: --${name} must be a count`);
  return v;
}

/** The lab's devices come as role=bdf pairs. */
export function labBdf(role: string): string | undefined {
  for (const spec of (process.env.VFIO_BRIDGE_HIL_DEVICES ?? '').split(',')) {
    const [r, bdf] = spec.split('=');
    if (r === role && bdf) return bdf;
  }
  return undefined;
}

function hugePagesFree(): string {
  try {
    const m = /HugePages_Free:\s*(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return m ? m[1] : '?';
  } catch {
    return '?';
  }
}

/**
 * The event loop of this process doing nothing else for `secs` seconds, after 2 s in which the
 * process's own start (compiling, the first collections) settles; with `secs` 0, until SIGTERM (bench.sh
 * runs it so beside QEMU's side: the lab's floor while a VMM runs the same guest).
 */
async function idle(secs: number, label: string): Promise<void> {
  // Taken from the start: a SIGTERM during the 2 s of settling ends the watch at once.
  const term = new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  await Promise.race([new Promise((resolve) => setTimeout(resolve, 2000)), term]);
  const stop = watchEventLoop(() => 'idle');
  const t0 = performance.now();
  await (secs > 0 ? new Promise((resolve) => setTimeout(resolve, secs * 1000)) : term);
  const l = stop();
  const took = ((performance.now() - t0) / 1000).toFixed(0);
  console.log(
    `node| vmm: ${label} (${took} s, nothing running): ${describeLoop(l).replace(/^event loop from create to after close: /, '')}`,
  );
  console.log(`node| vmm: ${label}: ${describeHolds(l)}`);
  writeLoopJson(l);
}

/** What --loop-json writes of an {@link EventLoopFigures}: bench-report.ts's `--loops` rows. */
export type LoopJson = Pick<
  EventLoopFigures,
  'p50' | 'p99' | 'max' | 'ticks' | 'expectedTicks' | 'cpuMs' | 'wallMs'
>;

/** --loop-json FILE: the loop's figures for bench-report.ts. */
function writeLoopJson(l: EventLoopFigures): void {
  if (!process.argv.includes('--loop-json')) return;
  const { p50, p99, max, ticks, expectedTicks, cpuMs, wallMs } = l;
  const json: LoopJson = { p50, p99, max, ticks, expectedTicks, cpuMs, wallMs };
  fs.writeFileSync(arg('loop-json'), JSON.stringify(json));
}

async function main(): Promise<void> {
  if (process.argv.includes('--idle')) return idle(count('idle', '10'), arg('label', 'idle baseline'));
  // Module loading is not the VMM's start-up: times count from here, as QEMU's side counts from its
  // exec. While the machine lives, lines go out through a stream on fd 1 that writes on the thread
  // pool: process.stdout writes files and pipes synchronously on Linux, and one line written to the
  // lab's console or a file held the loop 15 ms in a profiled run.
  const out = fs.createWriteStream('', { fd: 1, autoClose: false });
  const say = (text: string): void => void out.write(`${text}\n`);
  // Node loads the internals of fs.readFile at its first call and, under --no-lazy, compiles them
  // whole then: 2.6 ms on the host, the 22-26 ms hold at the start of open in the lab. A VMM that
  // has read a file before (its configuration) has them; so does this one, before its start.
  await new Promise((resolve) => fs.readFile('/proc/self/stat', resolve));
  const t0 = performance.now();
  const stamp = (t: number): string => `[${t.toFixed(2)}]`;
  const rtl = arg('rtl', '8139cp');
  if (rtl !== '8139cp' && rtl !== '8139too')
    throw new RangeError(`node-vmm: --rtl ${rtl} is not 8139cp or 8139too`);
  const e1000e = labBdf('e1000e');
  const rtl8139 = labBdf('rtl8139');
  if (!e1000e) throw new Error('node-vmm: the lab lists no e1000e device (VFIO_BRIDGE_HIL_DEVICES)');
  const noRtl = process.argv.includes('--no-rtl');
  if (!noRtl && !rtl8139)
    throw new Error('node-vmm: the lab lists no rtl8139 device (VFIO_BRIDGE_HIL_DEVICES)');
  const hugepages = arg('hugepages', 'no') === 'yes';
  const memMiB = count('mem', '256');
  const brief = process.argv.includes('--brief');
  const recordPath = process.argv.includes('--record') ? arg('record') : undefined;
  const record = recordPath !== undefined ? new RecordWriter(recordPath, 'Node VMM') : undefined;
  record?.about(`PcMachine (lib/vmm) on Node ${process.version}, times from PcMachine.open`);
  record?.startup(t0 / 1000);
  record?.about(
    hugepages
      ? `guest RAM: ${memMiB} MiB on ${HUGE_PAGE / MiB} MiB huge pages (hugetlb memfd; ${hugePagesFree()} pages free before the run)`
      : `guest RAM: ${memMiB} MiB memfd, small pages`,
  );
  const probe = record ? new PingRunProbe(record) : undefined;
  let result: VmmGuestResult;
  try {
    result = await runVmmGuest({
      kernel: arg('kernel'),
      initrd: arg('initrd'),
      e1000e,
      ...(noRtl ? {} : { rtl8139 }),
      rtl,
      ...(process.argv.includes('--pings') ? { pings: count('pings', '0') } : {}),
      memMiB,
      cpus: count('cpus', '1'),
      ...(process.argv.includes('--nice') ? { vcpuNice: Number(arg('nice')) } : {}),
      ...(process.argv.includes('--backend') ? { backend: backendArg(arg('backend')) } : {}),
      hugepages,
      append: arg('append', ''),
      timeoutMs: count('timeout', '120') * 1000,
      reboots: count('reboots', '0'),
      holdMs: count('hold-ms', String(HOLD_MS)),
      t0,
      onLine: ({ t, text }, pc) => {
        const probed = probe?.onLine(text, { ...pc.exits }) === true;
        record?.line(t, text);
        if (!(brief && / bytes from /.test(text)))
          say(brief ? `node| ${text}` : `${stamp(t)} ${text} (exits ${JSON.stringify(pc.exits)})`);
        // At a ping marker the probe starts reading KVM's counters (on the thread pool).
        return probed ? 'bench probe (KVM debugfs counters)' : undefined;
      },
      onEvent: (text) =>
        say(brief ? `node| vmm: ${text}` : `${stamp((performance.now() - t0) / 1000)} vmm: ${text}`),
    });
    for (const e of result.exits) record?.end(json(e));
  } finally {
    await probe?.settled();
    probe?.close();
    record?.flush();
    await new Promise((resolve) => out.end(resolve));
  }
  console.log(`${brief ? 'node| ' : ''}vmm: after close ${JSON.stringify(result.resources)}`);
  console.log(`${brief ? 'node| ' : ''}vmm: ${describeLoop(result.loop)}`);
  console.log(`${brief ? 'node| ' : ''}vmm: ${describeHolds(result.loop)}`);
  writeLoopJson(result.loop);
  if (process.argv.includes('--holds')) {
    const startUs =
      Number(process.hrtime.bigint() / 1000n) - (performance.now() - result.loop.startMs) * 1000;
    fs.writeFileSync(arg('holds'), JSON.stringify({ startUs, holds: result.loop.holds }));
  }
  if (result.exits.at(-1)?.reason !== 'reset') process.exitCode = 1;
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

/** --backend's value, checked. */
function backendArg(v: string): 'auto' | 'type1' | 'iommufd' {
  if (v === 'auto' || v === 'type1' || v === 'iommufd') return v;
  throw new RangeError(`--backend ${v}: auto, type1 or iommufd`);
}
