/**
 * What the VMM guest (scripts/vmm/guest-init.sh) says on its console, read the same way for every
 * VMM that boots it: its markers (init, drivers bound, each interface's first answer and ping run)
 * with the time each was seen, the replies' round trips, and the lines worth showing.
 */

/** One console line and when the VMM saw it, in seconds since the VMM started. */
export interface TimedLine {
  readonly t: number;
  readonly text: string;
}

/** One interface's measured ping run, between the guest's `ping start` and `ping done` markers. */
export interface PingRun {
  readonly ifc: string;
  readonly drv: string;
  /** Round trips in ms, in the order the replies came. */
  readonly rtts: number[];
  /** Busybox ping's own summary lines (transmitted/received, round-trip min/avg/max). */
  readonly summary: string[];
  /** The seconds at which the guest's markers were seen. */
  start?: number;
  done?: number;
  firstReply?: number;
}

/** A boot as its console tells it; times are seconds since the VMM started. */
export interface GuestRun {
  init?: number;
  /** When the guest kernel's clock started: the time of the guest's `uptime` line less its uptime. */
  kernelStart?: number;
  bound?: number;
  /** The guest's clocksource and timer device (its `clock` line). */
  clock?: string;
  /** The first answer on any interface (the guest's `first reply` marker). */
  firstReply?: number;
  end?: number;
  readonly drivers: string[];
  readonly links: string[];
  readonly irqs: string[];
  readonly failures: string[];
  /** In the order the guest ran them. */
  readonly pings: PingRun[];
}

const PREFIX = 'guest: ';
const REPLY_RTT = / bytes from .* time=([0-9.]+) ms/;

/** The guest's own text of a console line, or null when the line is not the guest's. */
export function guestText(line: string): string | null {
  return line.startsWith(PREFIX) ? line.slice(PREFIX.length) : null;
}

/** Reads a boot's console lines into its markers, round trips and reported lines. */
export function parseGuestConsole(lines: Iterable<TimedLine>): GuestRun {
  const run: GuestRun = { drivers: [], links: [], irqs: [], failures: [], pings: [] };
  const byIfc = new Map<string, PingRun>();
  const runOf = (ifc: string, drv: string): PingRun => {
    let p = byIfc.get(ifc);
    if (!p) {
      p = { ifc, drv, rtts: [], summary: [] };
      byIfc.set(ifc, p);
      run.pings.push(p);
    }
    return p;
  };
  for (const { t, text: line } of lines) {
    const g = guestText(line);
    if (g === null) continue;
    const w = g.split(' ');
    if (g.startsWith('init reached')) run.init ??= t;
    else if (w[0] === 'uptime' && w[2] === 'at' && Number.isFinite(Number(w[1])))
      run.kernelStart ??= t - Number(w[1]);
    else if (g === 'drivers bound') run.bound ??= t;
    else if (w[0] === 'clock') run.clock ??= g;
    else if (g === 'done') run.end ??= t;
    else if (w[0] === 'FAIL') run.failures.push(g);
    else if (w[0] === 'driver') run.drivers.push(g);
    else if (w[0] === 'link') run.links.push(g);
    else if (w[0] === 'irq') run.irqs.push(g);
    else if (w[0] === 'first' && w[1] === 'reply' && w.length >= 4) {
      runOf(w[2], w[3]).firstReply ??= t;
      run.firstReply ??= t;
    } else if (w[0] === 'ping' && (w[1] === 'start' || w[1] === 'done') && w.length >= 4) {
      const p = runOf(w[2], w[3]);
      if (w[1] === 'start') p.start ??= t;
      else p.done ??= t;
    } else if (w[0] === 'ping' && w.length >= 3) {
      const p = byIfc.get(w[1]);
      if (!p) continue;
      const rest = w.slice(2).join(' ');
      const m = REPLY_RTT.exec(rest);
      if (m) p.rtts.push(Number(m[1]));
      else if (/packets transmitted|round-trip/.test(rest)) p.summary.push(rest);
    }
  }
  return run;
}

/**
 * The q-quantile of ascending values by nearest rank below ((n - 1) * q, rounded down): the same
 * index the lab's shell scripts used, so figures stay comparable with earlier runs.
 */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) throw new RangeError('percentile of no values');
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile ${String(q)} is not in [0, 1]`);
  return sorted[Math.floor((sorted.length - 1) * q)];
}

/** Round-trip statistics of a ping run (ms). */
export interface RttStats {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly min: number;
  readonly max: number;
}

export function rttStats(rtts: readonly number[]): RttStats | null {
  if (rtts.length === 0) return null;
  const s = [...rtts].sort((a, b) => a - b);
  return { n: s.length, p50: percentile(s, 0.5), p99: percentile(s, 0.99), min: s[0], max: s[s.length - 1] };
}

/**
 * The lines a short showing of the boot keeps: drivers, links, each run's summary and round trips,
 * interrupt counts, and anything the guest reports as failed.
 */
export function isSummaryLine(line: string): boolean {
  const g = guestText(line);
  if (g === null) return false;
  return (
    /^(driver |drivers bound|link |irq |first reply |FAIL)/.test(g) ||
    /^ping \S+ .*(packets transmitted|round-trip)/.test(g)
  );
}
