/**
 * One channel for what a guest does wrong: every layer (a device model, an address space, the DMA
 * listener, the interrupt routing, KVM, the machine) hands a {@link GuestError} to a
 * {@link GuestErrorSink} instead of throwing, and the sink counts, rate-limits and delivers it. A
 * machine makes one sink and passes it down; an object used on its own makes its own.
 *
 * `process.emitWarning` is not for this: it stays for the host program's own misuse.
 */
import { EventEmitter, on } from 'node:events';

import { ArgRangeError, ArgTypeError } from './error';
import { emitGuarded } from './events';

/** The layer (or model) that reports. */
export type GuestErrorSource = 'pci' | 'memory' | 'dma' | 'irq' | 'kvm' | 'vmm';

/**
 * What was done instead of what the guest asked:
 * - `read-all-ones` / `read-zero`: a read answered with that value;
 * - `dropped`: a write thrown away;
 * - `passed-on`: handed to the kernel unchanged (it decides);
 * - `ignored`: nothing done (the guest's setup is not followed);
 * - `skipped`: a DMA section left unmapped;
 * - `retried` / `forgotten`: a failed unmap to be tried again, or given up;
 * - `undone`: a commit rolled back;
 * - `state-only`: only the guest-visible state was reset;
 * - `trapped`: served through exits instead of directly (a range KVM would not map).
 */
export type GuestErrorAction =
  | 'read-all-ones'
  | 'read-zero'
  | 'dropped'
  | 'passed-on'
  | 'ignored'
  | 'skipped'
  | 'retried'
  | 'forgotten'
  | 'undone'
  | 'state-only'
  | 'trapped';

/** One thing a guest did that was not served as asked, and what was done instead. */
export interface GuestError {
  /** The layer that reports it. */
  readonly source: GuestErrorSource;
  /** A stable code for the situation (the table in the README lists them). */
  readonly kind: string;
  /** The device (PCI address or mdev UUID) where there is one. */
  readonly device?: string;
  /** Where the access went: the region or address space (QEMU's naming), `config`, a vector key. */
  readonly where?: string;
  /** The guest address, port, or offset inside `where`. */
  readonly address?: number;
  /** Width of the access in bytes. */
  readonly width?: number;
  /** Length in bytes of a range that is not one access (a DMA section). */
  readonly size?: number;
  /** True for a write, false for a read (absent when it was no access). */
  readonly write?: boolean;
  /** The value written, where it is known. */
  readonly value?: number | bigint;
  /** What was done instead. */
  readonly action: GuestErrorAction;
  /** One line saying what happened. */
  readonly message: string;
  /** What usually causes it, or what to look at. */
  readonly hint?: string;
  /** The error behind it (a failed pread, a refused ioctl). */
  readonly error?: unknown;
  /** The reporting layer's own record (its typed event: UnassignedAccess, DeviceErrorEvent, DmaSkip, ...). */
  readonly detail?: unknown;
}

/** Options of a {@link GuestErrorSink}. */
export interface GuestErrorSinkOptions {
  /**
   * Where reports are logged while nobody listens: a function taking one line, or `null` for no
   * log (the counts and the event remain). Default: a line on stderr.
   */
  log?: ((line: string) => void) | null;
  /** How many reports of each (source, kind) are logged in full before only summaries are. Default 1. */
  logFirst?: number;
  /**
   * Minimum time between two summary lines of one (source, kind), in milliseconds (default 10000;
   * 0 logs every report). A summary says how many arrived since the last line and repeats the latest.
   */
  logIntervalMs?: number;
}

/** The events of a {@link GuestErrorSink}. */
export type GuestErrorEvents = {
  /** Every report, none left out. */
  'guest-error': [GuestError];
};

interface KindState {
  /** `source/kind`, as counts and log lines name it. */
  readonly key: string;
  count: number;
  /** Reports since the last line about this kind. */
  unlogged: number;
  lastLogAt: number;
  last: GuestError | null;
}

function defaultLog(line: string): void {
  process.stderr.write(`vfio-bridge: ${line}\n`);
}

function describe(e: GuestError, hint: boolean): string {
  const who = e.device !== undefined ? `${e.device}: ` : '';
  const why = hint && e.hint !== undefined ? ` (${e.hint})` : '';
  return `${who}${e.message} [${e.source}/${e.kind}, ${e.action}]${why}`;
}

/**
 * GuestErrorSink: where every layer reports a {@link GuestError}. It
 * - counts each report by (source, kind) ({@link counts}, {@link count}, {@link total});
 * - emits each one as `guest-error` (listeners see every report; one that throws is logged and the
 *   rest still run, and the report never turns into an exception at the guest access);
 * - iterates them with `for await (const e of sink.watch({ signal }))`;
 * - while nobody listens, logs them rate-limited, the one place the package does: the first
 *   `logFirst` of each (source, kind) in full, then at most one summary line per
 *   `logIntervalMs` with the count since the last, and {@link flush} writes what is still owed
 *   (a machine flushes when it closes). Nothing is dropped silently and nothing is thrown.
 */
export class GuestErrorSink extends EventEmitter<GuestErrorEvents> {
  readonly #log: ((line: string) => void) | null;
  readonly #logFirst: number;
  readonly #interval: number;
  /** By `source/kind`, in the order kinds first came. */
  readonly #kinds = new Map<string, KindState>();
  /** The same states by source, then kind: the per-report lookup builds no string. */
  readonly #bySource = new Map<string, Map<string, KindState>>();
  #total = 0;

  /** @throws TypeError (log not a function or null), RangeError (logFirst, logIntervalMs not >= 0) */
  constructor(opts: GuestErrorSinkOptions = {}) {
    super();
    if (opts.log !== undefined && opts.log !== null && typeof opts.log !== 'function') {
      throw new ArgTypeError('log must be a function or null');
    }
    const first = opts.logFirst ?? 1;
    if (typeof first !== 'number' || !Number.isSafeInteger(first) || first < 0) {
      throw new ArgRangeError(`logFirst ${String(first)} is out of range: must be an integer >= 0`);
    }
    const interval = opts.logIntervalMs ?? 10_000;
    if (typeof interval !== 'number' || !(interval >= 0)) {
      throw new ArgRangeError(`logIntervalMs ${String(interval)} is out of range: must be a number >= 0`);
    }
    this.#log = opts.log === undefined ? defaultLog : opts.log;
    this.#logFirst = first;
    this.#interval = interval;
  }

  /** Reports since creation, all kinds together. */
  get total(): number {
    return this.#total;
  }

  /** Reports so far by `source/kind` (e.g. `memory/unassigned`), in the order kinds first came. */
  get counts(): Readonly<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [key, s] of this.#kinds) out[key] = s.count;
    return out;
  }

  /** Reports of one source, or of one (source, kind). */
  count(source: GuestErrorSource, kind?: string): number {
    if (kind !== undefined) return this.#kinds.get(`${source}/${kind}`)?.count ?? 0;
    let n = 0;
    for (const [key, s] of this.#kinds) if (key.startsWith(`${source}/`)) n += s.count;
    return n;
  }

  /** Counts, delivers and (with nobody listening) logs one report. Never throws for the report's sake. */
  report(e: GuestError): void {
    this.#record(e, true);
  }

  #record(e: GuestError, emit: boolean): void {
    this.#total++;
    let kinds = this.#bySource.get(e.source);
    if (kinds === undefined) {
      kinds = new Map();
      this.#bySource.set(e.source, kinds);
    }
    let s = kinds.get(e.kind);
    if (s === undefined) {
      s = { key: `${e.source}/${e.kind}`, count: 0, unlogged: 0, lastLogAt: -Infinity, last: null };
      kinds.set(e.kind, s);
      this.#kinds.set(s.key, s);
    }
    s.count++;
    s.last = e;
    if (!emit || this.listenerCount('guest-error') === 0) {
      this.#logged(s);
      return;
    }
    const thrown: unknown[] = [];
    emitGuarded(this, 'guest-error', [e], (err) => thrown.push(err));
    // Reported once every listener heard `e`; a listener that throws at that report too is only
    // counted and logged, so a listener that always throws cannot loop.
    for (const err of thrown) {
      this.#record(
        {
          source: e.source,
          kind: 'listener-threw',
          action: 'ignored',
          message: `a 'guest-error' listener threw: ${err instanceof Error ? err.message : String(err)}`,
          error: err,
        },
        e.kind !== 'listener-threw',
      );
    }
  }

  /** Logs the summary every (source, kind) still owes, whatever the interval. */
  flush(): void {
    for (const s of this.#kinds.values()) if (s.unlogged > 0) this.#summary(s, Date.now());
  }

  /**
   * The reports from now on as an async iterator (`events.on` underneath: it buffers, so none is
   * missed between two turns). Ends when `signal` aborts (the loop then throws its AbortError).
   */
  watch(opts: { signal?: AbortSignal } = {}): AsyncIterableIterator<GuestError> {
    const it = on(this, 'guest-error', opts.signal ? { signal: opts.signal } : {});
    return {
      next: async () => {
        const r = await it.next();
        return r.done === true ? r : { done: false, value: (r.value as [GuestError])[0] };
      },
      return: async () => {
        await it.return?.();
        return { done: true, value: undefined };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  #logged(s: KindState): void {
    if (this.#log === null) return;
    if (s.count <= this.#logFirst) {
      s.lastLogAt = Date.now();
      this.#log(describe(s.last!, true));
      return;
    }
    s.unlogged++;
    const now = Date.now();
    if (now - s.lastLogAt >= this.#interval) this.#summary(s, now);
  }

  #summary(s: KindState, now: number): void {
    if (this.#log === null || s.last === null) return;
    const n = s.unlogged;
    s.unlogged = 0;
    s.lastLogAt = now;
    this.#log(`${s.key}: ${n} more (${s.count} in all), the last: ${describe(s.last, false)}`);
  }
}

/** How {@link forwardGuestErrors} shows the sink's reports on another emitter. @internal */
export interface GuestErrorForwarding {
  /** The event on the target (default `guest-error`). */
  event?: string;
  /** What the target's listeners get for a report (default: the report); null: nothing. */
  map?: (e: GuestError) => unknown;
  /** The source of the `listener-threw` report a throwing listener becomes (default: the report's). */
  source?: GuestErrorSource;
}

/**
 * Makes `target`'s `guest-error` event (or `how.event`) a view of `sink`'s: the sink hears a
 * forwarding listener only while `target` has listeners of its own, so with none the sink still
 * logs. A listener that throws becomes a `listener-threw` report, never a throw into the guest's access.
 */
export function forwardGuestErrors(
  target: EventEmitter,
  sink: GuestErrorSink,
  how: GuestErrorForwarding = {},
): void {
  const event = how.event ?? 'guest-error';
  const forward = (e: GuestError): void => {
    const payload = how.map ? how.map(e) : e;
    if (payload === null) return;
    emitGuarded(target, event, [payload], (err) =>
      sink.report({
        source: how.source ?? e.source,
        kind: 'listener-threw',
        action: 'ignored',
        message: `a '${event}' listener threw: ${err instanceof Error ? err.message : String(err)}`,
        error: err,
      }),
    );
  };
  target.on('newListener', (name: string | symbol) => {
    if (name === event && target.listenerCount(event) === 0) sink.on('guest-error', forward);
  });
  target.on('removeListener', (name: string | symbol) => {
    if (name === event && target.listenerCount(event) === 0) sink.off('guest-error', forward);
  });
}

/** `opts.guestErrors` when given, else a sink of the object's own with the object's log options. */
export function sinkOf(opts: {
  guestErrors?: GuestErrorSink | undefined;
  log?: ((line: string) => void) | null | undefined;
  logIntervalMs?: number | undefined;
}): GuestErrorSink {
  if (opts.guestErrors !== undefined) {
    if (!(opts.guestErrors instanceof GuestErrorSink)) {
      throw new ArgTypeError('guestErrors must be a GuestErrorSink');
    }
    if (opts.log !== undefined || opts.logIntervalMs !== undefined) {
      throw new ArgTypeError(
        'log and logIntervalMs belong to the GuestErrorSink when one is given: pass them to new GuestErrorSink({ log, logIntervalMs })',
      );
    }
    return opts.guestErrors;
  }
  const own: GuestErrorSinkOptions = {};
  if (opts.log !== undefined) own.log = opts.log;
  if (opts.logIntervalMs !== undefined) own.logIntervalMs = opts.logIntervalMs;
  return new GuestErrorSink(own);
}
