/**
 * The exit counts bench:vmm takes over each of the guest's ping runs, from the same kernel sources
 * for any VMM: KVM's debugfs counters (every exit, port I/O served in the kernel included) and the
 * kvm_userspace_exit tracepoint, counted by a hist trigger while the run lasts (every return from
 * KVM_RUN to the VMM, by exit reason), and the kvm_pio tracepoint the same way, by port.
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

/** KVM's debugfs exit counters (summed over every VM), or none when debugfs is not there. */
export function kvmExitStats(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of STATS) {
    try {
      out[s] = Number(fs.readFileSync(`${KVM_STATS}/${s}`, 'utf8').trim());
    } catch {
      // Missing counter: left out.
    }
  }
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
class Hist {
  readonly #dir: string;
  readonly #spec: string;
  #on = false;

  constructor(event: string, keys: string) {
    this.#dir = `${TRACEFS}/events/kvm/${event}`;
    this.#spec = `hist:keys=${keys}:sort=hitcount.descending`;
  }

  on(): void {
    try {
      fs.writeFileSync(`${this.#dir}/trigger`, this.#spec);
      this.#on = true;
    } catch {
      this.#on = false;
    }
  }

  off(): ReturnType<typeof parseHist> | null {
    if (!this.#on) return null;
    this.#on = false;
    let text = '';
    try {
      text = fs.readFileSync(`${this.#dir}/hist`, 'utf8');
    } finally {
      try {
        fs.writeFileSync(`${this.#dir}/trigger`, `!${this.#spec}`);
      } catch {
        // Already gone; nothing to undo.
      }
    }
    return parseHist(text);
  }
}

/**
 * Watches console lines for the guest's `ping start IFC DRV` / `ping done IFC DRV` markers and puts
 * the counts at each into a record, with the VMM's own cumulative counts (`own`, as `vmm.*` keys).
 * Call {@link onLine} synchronously as the guest writes the line, so the counts bracket the run.
 */
export class PingRunProbe {
  readonly #record: RecordWriter;
  readonly #userspace = new Hist('kvm_userspace_exit', 'reason');
  readonly #pio = new Hist('kvm_pio', 'port.hex');

  constructor(record: RecordWriter) {
    mounted(DEBUGFS, 'debugfs');
    mounted(TRACEFS, 'tracefs');
    this.#record = record;
  }

  /** Reads the counters at a ping run's start and done markers; true when `line` was one. */
  onLine(line: string, own: Counters): boolean {
    const m = /^guest: ping (start|done) (\S+) (\S+)$/.exec(line);
    if (!m) return false;
    const [, phase, ifc, drv] = m;
    const vmm = Object.entries(own).map(([k, v]) => [`vmm.${k}`, v]);
    if (phase === 'start') {
      this.#userspace.on();
      this.#pio.on();
      this.#record.counters('start', ifc, drv, { ...kvmExitStats(), ...Object.fromEntries(vmm) });
      return true;
    }
    const user = this.#userspace.off();
    const pio = this.#pio.off();
    const hist: Record<string, number> = {};
    if (user?.hits != null) hist.user = user.hits;
    for (const [reason, n] of user?.rows ?? []) hist[`user.${reason}`] = n;
    this.#record.counters('done', ifc, drv, { ...kvmExitStats(), ...Object.fromEntries(vmm), ...hist });
    if (pio) this.#record.ports(drv, pio.rows.slice(0, 6));
    return true;
  }
}
