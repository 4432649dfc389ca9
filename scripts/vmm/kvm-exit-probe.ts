/**
 * The exit counts bench:vmm takes over each of the guest's ping runs, from the same kernel sources
 * for any VMM: KVM's debugfs counters (every exit, port I/O served in the kernel included) and the
 * kvm_userspace_exit tracepoint, counted by a hist trigger installed for the whole run and read at
 * each marker (every return from KVM_RUN to the VMM, by exit reason), and the kvm_pio tracepoint the
 * same way, by port.
 * scripts/vmm/qemu-baseline.sh takes the same counts for QEMU in shell.
 *
 * Everything here is best effort: a kernel without debugfs or hist triggers gives no counts, and
 * the report says "not measured".
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { Counters, RecordWriter } from './run-record';

const DEBUGFS = '/sys/kernel/debug';
const KVM_STATS = `${DEBUGFS}/kvm`;
const TRACEFS = '/sys/kernel/tracing';
const STATS = ['exits', 'io_exits', 'mmio_exits', 'halt_exits', 'irq_exits'] as const;

function mounted(dir: string, type: string): void {
  try {
    if (fs.readFileSync('/proc/mounts', 'utf8').includes(` ${dir} ${type} `)) return;
    execFileSync('mount', ['-t', type, type, dir], { stdio: 'ignore' });
  } catch {
    // Not root, or no such filesystem: the counts are then missing and reported so.
  }
}

/**
 * KVM's debugfs exit counters (summed over every VM), or none when debugfs is not there. Read on
 * the thread pool: read synchronously at a ping marker, with the hist tables, they held the Node
 * VMM's event loop up to 21 ms in the lab, which is the bench's cost and not the VMM's.
 */
export async function kvmExitStats(): Promise<Record<string, number>> {
  const values = await Promise.all(
    STATS.map((s) =>
      fs.promises.readFile(`${KVM_STATS}/${s}`, 'utf8').then(
        (text) => Number(text.trim()),
        () => undefined, // a missing counter is left out
      ),
    ),
  );
  const out: Record<string, number> = {};
  STATS.forEach((s, i) => {
    const v = values[i];
    if (v !== undefined) out[s] = v;
  });
  return out;
}

/** The `{ key: value } hitcount: N` rows and the total of a hist file. */
export function parseHist(text: string): { rows: [string, number][]; hits: number | null } {
  const rows: [string, number][] = [];
  for (const m of text.matchAll(/^\{\s*\w+:\s*(\S+)\s*\}\s*hitcount:\s*(\d+)/gm))
    rows.push([m[1], Number(m[2])]);
  const total = /^\s*Hits:\s*(\d+)/m.exec(text);
  return { rows, hits: total ? Number(total[1]) : null };
}

/** A hist trigger on one kvm tracepoint, counting its hits by one key between on() and off(). */
type HistTable = ReturnType<typeof parseHist>;

/** `done` less `start`, row by row (a hist trigger's counts only grow while it is installed). */
export function histDelta(start: HistTable, done: HistTable): HistTable {
  const before = new Map(start.rows);
  const rows = done.rows
    .map(([key, n]): [string, number] => [key, n - (before.get(key) ?? 0)])
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
  const hits = done.hits === null ? null : done.hits - (start.hits ?? 0);
  return { rows, hits };
}

/**
 * A hist trigger on one kvm tracepoint, installed once for the whole run and read at each marker.
 * Installing or removing one enables or disables the tracepoint, which patches kernel text; under
 * the lab's TCG that stops every CPU for tens of milliseconds, the VMM's event loop included, so
 * it is done before the VMM starts and after it ends, never at a ping marker.
 */
class Hist {
  readonly #dir: string;
  readonly #spec: string;
  #on = false;

  constructor(event: string, keys: string) {
    this.#dir = `${TRACEFS}/events/kvm/${event}`;
    this.#spec = `hist:keys=${keys}:sort=hitcount.descending`;
  }

  install(): void {
    try {
      fs.writeFileSync(`${this.#dir}/trigger`, this.#spec);
      this.#on = true;
    } catch {
      this.#on = false;
    }
  }

  /** The counts so far, read on the thread pool; null when the trigger is not installed. */
  async read(): Promise<HistTable | null> {
    if (!this.#on) return null;
    return fs.promises.readFile(`${this.#dir}/hist`, 'utf8').then(parseHist, () => null);
  }

  remove(): void {
    if (!this.#on) return;
    this.#on = false;
    try {
      fs.writeFileSync(`${this.#dir}/trigger`, `!${this.#spec}`);
    } catch {
      // Already gone; nothing to undo.
    }
  }
}

/**
 * Watches console lines for the guest's `ping start IFC DRV` / `ping done IFC DRV` markers and puts
 * the counts at each into a record, with the VMM's own cumulative counts (`own`, as `vmm.*` keys).
 * Call {@link onLine} as the guest writes the line: the reads start then, on the thread pool, as
 * qemu-baseline.sh's do beside QEMU, and {@link settled} waits for them before the record is written.
 */
export class PingRunProbe {
  readonly #record: RecordWriter;
  readonly #userspace = new Hist('kvm_userspace_exit', 'reason');
  readonly #pio = new Hist('kvm_pio', 'port.hex');
  #atStart: Promise<{ user: HistTable | null; pio: HistTable | null }> | null = null;
  /** The records written so far, in marker order. */
  #chain: Promise<void> = Promise.resolve();

  /** Installs the hist triggers: make it before the VMM starts, {@link close} it after. */
  constructor(record: RecordWriter) {
    mounted(DEBUGFS, 'debugfs');
    mounted(TRACEFS, 'tracefs');
    this.#record = record;
    this.#userspace.install();
    this.#pio.install();
  }

  /** Starts reading the counters at a ping run's start and done markers; true when `line` was one. */
  onLine(line: string, own: Counters): boolean {
    const m = /^guest: ping (start|done) (\S+) (\S+)$/.exec(line);
    if (!m) return false;
    const [, phase, ifc, drv] = m;
    const vmm = Object.fromEntries(Object.entries(own).map(([k, v]) => [`vmm.${k}`, v]));
    const stats = kvmExitStats();
    const hists = Promise.all([this.#userspace.read(), this.#pio.read()]).then(([user, pio]) => ({
      user,
      pio,
    }));
    if (phase === 'start') {
      this.#atStart = hists;
      this.#then(async () => this.#record.counters('start', ifc, drv, { ...(await stats), ...vmm }));
      return true;
    }
    const atStart = this.#atStart;
    this.#atStart = null;
    this.#then(async () => {
      const [start, done] = await Promise.all([atStart, hists]);
      const since = (a: HistTable | null | undefined, b: HistTable | null): HistTable | null =>
        a && b ? histDelta(a, b) : null;
      const user = since(start?.user, done.user);
      const pio = since(start?.pio, done.pio);
      const hist: Record<string, number> = {};
      if (user?.hits != null) hist.user = user.hits;
      for (const [reason, n] of user?.rows ?? []) hist[`user.${reason}`] = n;
      this.#record.counters('done', ifc, drv, { ...(await stats), ...vmm, ...hist });
      if (pio) this.#record.ports(drv, pio.rows.slice(0, 6));
    });
    return true;
  }

  /** Every marker's counts are in the record. */
  settled(): Promise<void> {
    return this.#chain;
  }

  // The reads run at once; their records go in marker order. The reads never reject.
  #then(write: () => Promise<void>): void {
    this.#chain = this.#chain.then(write);
  }

  /** Removes the hist triggers. */
  close(): void {
    this.#userspace.remove();
    this.#pio.remove();
  }
}
