/**
 * The record one side of bench:vmm leaves for scripts/vmm/bench-report.ts: plain text, one entry a
 * line, so the QEMU side (a shell script) and the Node side (node-vmm.ts) write the same thing.
 *
 *   side NAME                       who ran the guest (the report's column title)
 *   about TEXT                      what the report says about this side (version, guest memory)
 *   startup SECONDS                 time the VMM's process spent before its start (module loading)
 *   t SECONDS TEXT                  a console line, seconds since the VMM's start
 *   counters start|done IFC DRV K=V ...
 *                                   counters at an interface's ping markers: KVM's debugfs exit
 *                                   counters (cumulative: exits, io_exits, mmio_exits, halt_exits,
 *                                   irq_exits), `user` and `user.REASON` (exits to userspace by
 *                                   KVM_EXIT_* number, counted by the kvm_userspace_exit hist
 *                                   between the markers, so only at `done`), and whatever the VMM
 *                                   counts itself (`vmm.*`, cumulative)
 *   ports DRV PORT=HITS ...         the ports of the port I/O exits between the markers
 *   end TEXT                        how the VMM ended
 */
import * as fs from 'node:fs';

export type Counters = Readonly<Record<string, number>>;

export interface RunRecord {
  readonly side: string;
  readonly about: string[];
  /** Seconds the process spent before the VMM's start (the times count from that start). */
  startup: number;
  readonly lines: { t: number; text: string }[];
  /** By driver: the counters at the start and the end of its ping run. */
  readonly counters: Map<string, { ifc: string; start?: Counters; done?: Counters }>;
  readonly ports: Map<string, [string, number][]>;
  readonly ends: string[];
}

function pairs(words: readonly string[], what: string): [string, number][] {
  return words.map((w) => {
    const i = w.lastIndexOf('=');
    const v = Number(w.slice(i + 1));
    if (i <= 0 || w.slice(i + 1) === '' || !Number.isFinite(v))
      throw new SyntaxError(`${what}: '${w}' is not KEY=NUMBER`);
    return [w.slice(0, i), v];
  });
}

/** Parses a record's text; `name` names it in errors. */
export function parseRecord(text: string, name = 'record'): RunRecord {
  const rec: RunRecord = {
    side: '',
    about: [],
    startup: 0,
    lines: [],
    counters: new Map(),
    ports: new Map(),
    ends: [],
  };
  let side = '';
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line === '') return;
    const where = `${name}:${i + 1}`;
    const sp = line.indexOf(' ');
    const kind = sp < 0 ? line : line.slice(0, sp);
    const rest = sp < 0 ? '' : line.slice(sp + 1);
    const w = rest.split(' ').filter((x) => x !== '');
    switch (kind) {
      case 'side':
        side = rest;
        break;
      case 'about':
        rec.about.push(rest);
        break;
      case 'startup':
        rec.startup = Number(rest);
        if (rest === '' || !Number.isFinite(rec.startup))
          throw new SyntaxError(`${where}: '${rest}' is not seconds`);
        break;
      case 'end':
        rec.ends.push(rest);
        break;
      case 't': {
        const cut = rest.indexOf(' ');
        const t = Number(cut < 0 ? rest : rest.slice(0, cut));
        if (rest === '' || !Number.isFinite(t))
          throw new SyntaxError(`${where}: '${rest}' does not start with seconds`);
        rec.lines.push({ t, text: cut < 0 ? '' : rest.slice(cut + 1) });
        break;
      }
      case 'counters': {
        const [phase, ifc, drv] = w;
        if ((phase !== 'start' && phase !== 'done') || !ifc || !drv)
          throw new SyntaxError(`${where}: counters needs start|done IFC DRV`);
        const c = rec.counters.get(drv) ?? { ifc };
        c[phase] = Object.fromEntries(pairs(w.slice(3), where));
        rec.counters.set(drv, c);
        break;
      }
      case 'ports':
        if (!w[0]) throw new SyntaxError(`${where}: ports needs DRV`);
        rec.ports.set(w[0], pairs(w.slice(1), where));
        break;
      default:
        throw new SyntaxError(`${where}: unknown entry '${kind}'`);
    }
  });
  if (side === '') throw new SyntaxError(`${name}: no 'side' line`);
  return { ...rec, side };
}

export function readRecord(path: string): RunRecord {
  return parseRecord(fs.readFileSync(path, 'utf8'), path);
}

/** Per-ping change of each counter over a ping run: (done - start) / pings; absent at start = 0. */
export function perPing(c: { start?: Counters; done?: Counters }, pings: number): Record<string, number> {
  const out: Record<string, number> = {};
  if (!c.done || pings <= 0) return out;
  for (const [k, v] of Object.entries(c.done)) out[k] = (v - (c.start?.[k] ?? 0)) / pings;
  return out;
}

/** Writes a record as a VMM runs; lines are buffered and written by {@link flush}. */
export class RecordWriter {
  readonly #path: string;
  readonly #out: string[] = [];

  constructor(path: string, side: string) {
    this.#path = path;
    this.#out.push(`side ${side}`);
  }

  about(text: string): void {
    this.#out.push(`about ${text}`);
  }

  line(t: number, text: string): void {
    this.#out.push(`t ${t.toFixed(3)} ${text.replace(/[\r\n]/g, ' ')}`);
  }

  counters(phase: 'start' | 'done', ifc: string, drv: string, values: Counters): void {
    const kv = Object.entries(values).map(([k, v]) => `${k}=${v}`);
    this.#out.push(`counters ${phase} ${ifc} ${drv} ${kv.join(' ')}`.trimEnd());
  }

  ports(drv: string, hits: readonly [string, number][]): void {
    this.#out.push(`ports ${drv} ${hits.map(([p, n]) => `${p}=${n}`).join(' ')}`.trimEnd());
  }

  startup(seconds: number): void {
    this.#out.push(`startup ${seconds.toFixed(3)}`);
  }

  end(text: string): void {
    this.#out.push(`end ${text}`);
  }

  flush(): void {
    fs.writeFileSync(this.#path, this.#out.join('\n') + '\n');
  }
}
