/**
 * The migration state machine, in pure TypeScript: which states a device offers for its flags,
 * which single arcs its driver implements, and the path the kernel steps through for a request,
 * so that an impossible request is refused before any ioctl, with the requests that would work.
 *
 * The kernel answers a request for any offered state in one VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
 * call, walking a fixed path of arcs (the uAPI's "combination transitions": the shortest path, with
 * the kernel's own choice where two are as short). NEXT_HOP below is that choice, as the uAPI
 * documents it: from state A towards state B, the next state the kernel takes. States a device does
 * not offer are stepped over the way the kernel steps over them: the hop after an unsupported state
 * is looked up from that state, towards the same target.
 */
import { ArgTypeError } from '../base/error';
import { MigrationError } from './migration-error';
import {
  isMigrationState,
  MIGRATION_STATES,
  type MigrationFlags,
  type MigrationState,
} from './migration-uapi';

/** The migration flags the state machine depends on (a {@link MigrationFlags} will do). */
export type MigrationFeatureFlags = Pick<MigrationFlags, 'stopCopy' | 'p2p' | 'preCopy'>;

/** What an arc does to the migration data session. */
export type ArcEffect =
  /** Nothing: the device only changes how it runs. */
  | 'none'
  /** A save session starts: the request returns a data fd to read the state from. */
  | 'save'
  /** A resume session starts: the request returns a data fd to write the state into. */
  | 'resume'
  /** The pre-copy session goes on into STOP_COPY: no new fd, the pre-copy fd keeps streaming. */
  | 'continue'
  /** The session ends: its data fd is finished (RESUMING -> STOP also loads the state written). */
  | 'end';

/** One arc: a step a driver implements. */
export interface MigrationArc {
  /** The state the arc leaves. */
  readonly from: MigrationState;
  /** The state the arc reaches: always another one (no arc loops). */
  readonly to: MigrationState;
  /** What crossing it does to the migration data session. */
  readonly effect: ArcEffect;
}

/** The path the kernel takes for one request. */
export interface MigrationPath {
  /** The state the device is in when the request is made. */
  readonly from: MigrationState;
  /** The state the request asks for. */
  readonly to: MigrationState;
  /** Every state on the way, `from` first and `to` last (just `[from]` when they are equal). */
  readonly states: readonly MigrationState[];
  /** The arcs, in order. */
  readonly arcs: readonly MigrationArc[];
  /** The data fd the request returns: a new save or resume session, or none. */
  readonly dataFd: 'save' | 'resume' | null;
}

/** States every migration-capable device has, and what each optional one needs. */
function offers(flags: MigrationFeatureFlags, s: MigrationState): boolean {
  switch (s) {
    case 'ERROR':
      return true; // never asked for; only ever reported
    case 'RUNNING_P2P':
      return flags.stopCopy && flags.p2p;
    case 'PRE_COPY':
      return flags.stopCopy && flags.preCopy;
    case 'PRE_COPY_P2P':
      return flags.stopCopy && flags.preCopy && flags.p2p;
    default:
      return flags.stopCopy;
  }
}

/** The states a device with `flags` can be asked for (ERROR never can). */
export function offeredStates(flags: MigrationFeatureFlags): MigrationState[] {
  return MIGRATION_STATES.filter((s) => s !== 'ERROR' && offers(flags, s));
}

type Row = Partial<Record<MigrationState, MigrationState>>;

/**
 * The kernel's next hop from a state (row) towards a target (column), over every state; the
 * hop is the target itself where one arc joins them. Missing entries are the target itself.
 * STOP_COPY -> PRE_COPY(_P2P) has no hop: the kernel refuses it.
 */
const NEXT_HOP: Record<Exclude<MigrationState, 'ERROR'>, Row> = {
  STOP: {
    RUNNING: 'RUNNING_P2P',
    PRE_COPY: 'RUNNING_P2P',
    PRE_COPY_P2P: 'RUNNING_P2P',
  },
  RUNNING: {
    STOP: 'RUNNING_P2P',
    PRE_COPY_P2P: 'RUNNING_P2P',
    STOP_COPY: 'RUNNING_P2P',
    RESUMING: 'RUNNING_P2P',
  },
  PRE_COPY: {
    STOP: 'RUNNING',
    STOP_COPY: 'PRE_COPY_P2P',
    RESUMING: 'RUNNING',
    RUNNING_P2P: 'RUNNING',
  },
  PRE_COPY_P2P: {
    STOP: 'RUNNING_P2P',
    RUNNING: 'RUNNING_P2P',
    RESUMING: 'RUNNING_P2P',
  },
  STOP_COPY: {
    RUNNING: 'STOP',
    PRE_COPY: 'ERROR',
    PRE_COPY_P2P: 'ERROR',
    RESUMING: 'STOP',
    RUNNING_P2P: 'STOP',
  },
  RESUMING: {
    RUNNING: 'STOP',
    PRE_COPY: 'STOP',
    PRE_COPY_P2P: 'STOP',
    STOP_COPY: 'STOP',
    RUNNING_P2P: 'STOP',
  },
  RUNNING_P2P: {
    PRE_COPY: 'RUNNING',
    STOP_COPY: 'STOP',
    RESUMING: 'STOP',
  },
};

function hop(from: MigrationState, to: MigrationState): MigrationState {
  if (from === 'ERROR' || to === 'ERROR') return 'ERROR';
  return NEXT_HOP[from][to] ?? to;
}

/** The kernel's next state from `from` towards `to` for a device with `flags`; ERROR: refused. */
function nextState(flags: MigrationFeatureFlags, from: MigrationState, to: MigrationState): MigrationState {
  let next = hop(from, to);
  // Unsupported states are stepped over: the hop is taken again from there, towards the target.
  while (!offers(flags, next)) next = hop(next, to);
  return next;
}

/** What the arc `from` -> `to` does to the data session, for a device with `flags`. */
function arcEffect(flags: MigrationFeatureFlags, from: MigrationState, to: MigrationState): ArcEffect {
  if (to === 'RESUMING') return 'resume';
  if (to === 'STOP_COPY') return from === 'STOP' ? 'save' : 'continue';
  if (to === 'PRE_COPY' || to === 'PRE_COPY_P2P') {
    return from === 'PRE_COPY' || from === 'PRE_COPY_P2P' ? 'none' : 'save';
  }
  if (from === 'STOP_COPY' || from === 'RESUMING') return 'end';
  if (from === 'PRE_COPY' || from === 'PRE_COPY_P2P') return 'end';
  void flags;
  return 'none';
}

/**
 * The path of a request that the kernel takes, or the reason it will not: null when the kernel
 * refuses (the reason is then found by {@link findMigrationPath}).
 */
function walk(
  flags: MigrationFeatureFlags,
  from: MigrationState,
  to: MigrationState,
): MigrationState[] | null {
  const states: MigrationState[] = [from];
  let at = from;
  while (at !== to) {
    const next = nextState(flags, at, to);
    if (next === 'ERROR' || states.length > MIGRATION_STATES.length) return null;
    states.push(next);
    at = next;
  }
  return states;
}

function pathOf(flags: MigrationFeatureFlags, states: MigrationState[]): MigrationPath {
  const arcs: MigrationArc[] = [];
  for (let i = 1; i < states.length; i++) {
    arcs.push({ from: states[i - 1]!, to: states[i]!, effect: arcEffect(flags, states[i - 1]!, states[i]!) });
  }
  const last = arcs.at(-1)?.effect;
  return {
    from: states[0]!,
    to: states.at(-1)!,
    states,
    arcs,
    dataFd: last === 'save' || last === 'resume' ? last : null,
  };
}

function flagNames(flags: MigrationFeatureFlags): string {
  const names = [flags.stopCopy && 'STOP_COPY', flags.p2p && 'P2P', flags.preCopy && 'PRE_COPY'];
  return names.filter(Boolean).join('|') || 'none';
}

function checkState(what: string, s: unknown): MigrationState {
  if (!isMigrationState(s)) {
    throw new ArgTypeError(`${what} must be one of ${MIGRATION_STATES.join(', ')}, got ${JSON.stringify(s)}`);
  }
  return s;
}

/**
 * findMigrationPath: the path the kernel takes from `from` to `to` for a device with `flags`.
 * @throws MigrationError before any ioctl: `ENOMIGRATION` (no STOP_COPY flag), `EMIGSTATE` (a state
 * the device does not offer), `EMIGERROR` (from ERROR, or ERROR asked for), `EMIGARC` (no single
 * request gets there; `requests` lists the states to ask for in turn)
 */
export function findMigrationPath(
  flags: MigrationFeatureFlags,
  from: MigrationState,
  to: MigrationState,
): MigrationPath {
  checkState('from', from);
  checkState('to', to);
  const base = { op: 'VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE', from, to };
  if (!flags.stopCopy) {
    throw new MigrationError({
      ...base,
      message: `the device offers no migration (its migration flags: ${flagNames(flags)})`,
      code: 'ENOMIGRATION',
      hint: 'VFIO_MIGRATION_STOP_COPY is the least a migratable device offers; this one cannot save or load its state',
    });
  }
  if (to === 'ERROR') {
    throw new MigrationError({
      ...base,
      message: 'ERROR cannot be asked for: it is where a failed transition may leave a device',
      code: 'EMIGERROR',
      hint: 'ask for a state the device offers: ' + offeredStates(flags).join(', '),
    });
  }
  if (from === 'ERROR') {
    throw new MigrationError({
      ...base,
      state: 'ERROR',
      message: `the device is in ERROR: no transition leaves it`,
      code: 'EMIGERROR',
      hint: `reset the device (VFIO_DEVICE_RESET, device.reset()): that returns it to RUNNING; then ask for ${to}`,
    });
  }
  for (const [what, s] of [
    ['asked for', to],
    ['reported as current', from],
  ] as const) {
    if (!offers(flags, s)) {
      throw new MigrationError({
        ...base,
        message: `state ${s} (${what}) is not offered by this device (its migration flags: ${flagNames(flags)})`,
        code: 'EMIGSTATE',
        hint: unofferedHint(flags, s),
      });
    }
  }
  const states = walk(flags, from, to);
  if (states !== null) return pathOf(flags, states);
  const requests = detour(flags, from, to);
  const route = requests.map((r, i) => pathOf(flags, walk(flags, i === 0 ? from : requests[i - 1]!, r)!));
  throw new MigrationError({
    ...base,
    message: `the kernel takes no transition from ${from} to ${to} in one request`,
    code: 'EMIGARC',
    requests,
    hint:
      `ask for ${requests.join(', then ')}: ` +
      route.map((p) => p.states.join(' -> ')).join('; then ') +
      (to === 'PRE_COPY' || to === 'PRE_COPY_P2P'
        ? ` (a new ${to} starts a new save session; the STOP_COPY one ends)`
        : ''),
  });
}

/** What to ask for instead of a state the device does not offer. */
function unofferedHint(flags: MigrationFeatureFlags, s: MigrationState): string {
  const offered = offeredStates(flags).join(', ');
  if (s === 'RUNNING_P2P')
    return `without P2P, RUNNING and STOP are the running and stopped states (offered: ${offered})`;
  if (s === 'PRE_COPY_P2P') {
    return flags.preCopy
      ? `without P2P, pre-copy happens in PRE_COPY (offered: ${offered})`
      : `save from STOP with STOP_COPY (offered: ${offered})`;
  }
  if (s === 'PRE_COPY') return `without pre-copy, save from STOP with STOP_COPY (offered: ${offered})`;
  return `offered: ${offered}`;
}

/**
 * The shortest sequence of requests from `from` that reaches `to` when no single one does: one
 * intermediate state the kernel reaches from `from` and from which it reaches `to`.
 */
function detour(flags: MigrationFeatureFlags, from: MigrationState, to: MigrationState): MigrationState[] {
  // The fewest arcs in all; of equal ones, the intermediate state nearest the target.
  let best: { via: MigrationState; length: number; last: number } | null = null;
  for (const via of offeredStates(flags)) {
    if (via === from || via === to) continue;
    const a = walk(flags, from, via);
    const b = walk(flags, via, to);
    if (a === null || b === null) continue;
    const length = a.length + b.length;
    if (best === null || length < best.length || (length === best.length && b.length < best.last)) {
      best = { via, length, last: b.length };
    }
  }
  // Every offered state reaches RUNNING and RUNNING reaches every offered state, so there is one.
  return best === null ? [to] : [best.via, to];
}

/** Every arc the driver of a device with `flags` implements: the single steps of all paths. */
export function migrationArcs(flags: MigrationFeatureFlags): MigrationArc[] {
  const seen = new Map<string, MigrationArc>();
  if (!flags.stopCopy) return [];
  for (const from of offeredStates(flags)) {
    for (const to of offeredStates(flags)) {
      const states = walk(flags, from, to);
      if (states === null) continue;
      for (const arc of pathOf(flags, states).arcs) seen.set(`${arc.from}>${arc.to}`, arc);
    }
  }
  return [...seen.values()];
}

/**
 * A tour that crosses every arc of `flags` at least once, from `start` (default RUNNING), as the
 * list of states to ask for one after another (each one arc away). For tests and benchmarks that
 * time every arc a device implements.
 */
export function arcTour(flags: MigrationFeatureFlags, start: MigrationState = 'RUNNING'): MigrationState[] {
  const left = new Map(migrationArcs(flags).map((a) => [`${a.from}>${a.to}`, a]));
  const tour: MigrationState[] = [];
  let at = start;
  while (left.size > 0) {
    // Go to the nearest state that still has an uncrossed arc, then cross it.
    let bestPath: MigrationState[] | null = null;
    let bestArc: MigrationArc | null = null;
    for (const arc of left.values()) {
      const p = walk(flags, at, arc.from);
      if (p === null) continue;
      if (bestPath === null || p.length < bestPath.length) {
        bestPath = p;
        bestArc = arc;
      }
    }
    if (bestPath === null || bestArc === null) break;
    for (const s of bestPath.slice(1)) {
      tour.push(s);
      left.delete(`${at}>${s}`);
      at = s;
    }
    tour.push(bestArc.to);
    left.delete(`${bestArc.from}>${bestArc.to}`);
    at = bestArc.to;
  }
  return tour;
}
