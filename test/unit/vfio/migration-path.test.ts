// The migration state machine (lib/vfio/migration-path.ts), exhaustively: for every combination of
// migration flags and every pair of states, the path agrees with an independent model built from the
// uAPI's own list of the arcs a driver implements, and refusals come before any ioctl.
import { MigrationError } from '../../../lib/vfio/migration-error';
import {
  arcTour,
  findMigrationPath,
  migrationArcs,
  offeredStates,
  type MigrationPath,
} from '../../../lib/vfio/migration-path';
import { MIGRATION_STATES, type MigrationState } from '../../../lib/vfio/migration-uapi';

type Flags = { stopCopy: boolean; p2p: boolean; preCopy: boolean };
const FLAG_SETS: Flags[] = [
  { stopCopy: true, p2p: false, preCopy: false },
  { stopCopy: true, p2p: true, preCopy: false },
  { stopCopy: true, p2p: false, preCopy: true },
  { stopCopy: true, p2p: true, preCopy: true },
];
const label = (f: Flags): string =>
  ['STOP_COPY', f.p2p && 'P2P', f.preCopy && 'PRE_COPY'].filter(Boolean).join('|');

/** The arcs the uAPI says a driver implements for each feature, written out independently. */
function documentedArcs(f: Flags): Set<string> {
  const arcs = ['RESUMING>STOP', 'STOP>RESUMING', 'STOP>STOP_COPY', 'STOP_COPY>STOP'];
  if (f.p2p) arcs.push('RUNNING>RUNNING_P2P', 'RUNNING_P2P>RUNNING', 'RUNNING_P2P>STOP', 'STOP>RUNNING_P2P');
  else arcs.push('RUNNING>STOP', 'STOP>RUNNING');
  if (f.preCopy && f.p2p) {
    arcs.push(
      'PRE_COPY>RUNNING',
      'PRE_COPY>PRE_COPY_P2P',
      'PRE_COPY_P2P>PRE_COPY',
      'PRE_COPY_P2P>RUNNING_P2P',
      'PRE_COPY_P2P>STOP_COPY',
      'RUNNING>PRE_COPY',
      'RUNNING_P2P>PRE_COPY_P2P',
    );
  } else if (f.preCopy) {
    arcs.push('RUNNING>PRE_COPY', 'PRE_COPY>RUNNING', 'PRE_COPY>STOP_COPY');
  }
  return new Set(arcs);
}

/** Breadth-first distances over the documented arcs. */
function bfs(arcs: Set<string>, from: MigrationState): Map<MigrationState, number> {
  const dist = new Map<MigrationState, number>([[from, 0]]);
  const queue: MigrationState[] = [from];
  while (queue.length > 0) {
    const at = queue.shift()!;
    for (const a of arcs) {
      const [x, y] = a.split('>') as [MigrationState, MigrationState];
      if (x === at && !dist.has(y)) {
        dist.set(y, dist.get(at)! + 1);
        queue.push(y);
      }
    }
  }
  return dist;
}

/** The transitions the uAPI says the kernel refuses with every feature. */
const BLOCKED = new Set(['STOP_COPY>PRE_COPY', 'STOP_COPY>PRE_COPY_P2P']);

function refusal(f: () => unknown): MigrationError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(MigrationError);
    return e as MigrationError;
  }
  throw new Error('expected a MigrationError');
}

describe.each(FLAG_SETS)('flags %#', (flags) => {
  const name = label(flags);
  const documented = documentedArcs(flags);
  const offered = offeredStates(flags);

  it(`${name}: offers the states its flags name`, () => {
    const want: MigrationState[] = ['STOP', 'RUNNING', 'STOP_COPY', 'RESUMING'];
    if (flags.p2p) want.push('RUNNING_P2P');
    if (flags.preCopy) want.push('PRE_COPY');
    if (flags.preCopy && flags.p2p) want.push('PRE_COPY_P2P');
    expect([...offered].sort()).toEqual(want.sort());
  });

  it(`${name}: the arcs are exactly the ones the uAPI lists`, () => {
    const arcs = new Set(migrationArcs(flags).map((a) => `${a.from}>${a.to}`));
    expect([...arcs].sort()).toEqual([...documented].sort());
  });

  it(`${name}: each arc asked for alone is that one arc`, () => {
    for (const arc of migrationArcs(flags)) {
      expect(findMigrationPath(flags, arc.from, arc.to).states).toEqual([arc.from, arc.to]);
    }
  });

  for (const from of offered) {
    for (const to of offered) {
      const key = `${from}>${to}`;
      if (flags.preCopy && BLOCKED.has(key)) {
        it(`${name}: ${key} is refused with the two requests that get there`, () => {
          const e = refusal(() => findMigrationPath(flags, from, to));
          expect(e.code).toBe('EMIGARC');
          expect(e.from).toBe(from);
          expect(e.to).toBe(to);
          expect(e.requests?.at(-1)).toBe(to);
          expect(e.requests).toHaveLength(2);
          // Each request is one the kernel takes, and together they end at the target.
          let at = from;
          for (const r of e.requests!) {
            expect(() => findMigrationPath(flags, at, r)).not.toThrow();
            at = r;
          }
          expect(e.hint).toContain(`${from} -> STOP`);
          // Of the equally short detours, the one through the state next to the target.
          expect(e.requests![0]).toBe(flags.p2p && to === 'PRE_COPY_P2P' ? 'RUNNING_P2P' : 'RUNNING');
        });
        continue;
      }
      it(`${name}: ${key} is a shortest path over the documented arcs`, () => {
        const p: MigrationPath = findMigrationPath(flags, from, to);
        expect(p.states[0]).toBe(from);
        expect(p.states.at(-1)).toBe(to);
        for (const arc of p.arcs) expect(documented.has(`${arc.from}>${arc.to}`)).toBe(true);
        expect(p.arcs).toHaveLength(bfs(documented, from).get(to)!);
        expect(new Set(p.states).size).toBe(p.states.length);
        // Only the last arc may open a data session, and the path's data fd is that session's.
        p.arcs.slice(0, -1).forEach((a) => expect(['save', 'resume']).not.toContain(a.effect));
        const last = p.arcs.at(-1);
        expect(p.dataFd).toBe(last?.effect === 'save' || last?.effect === 'resume' ? last.effect : null);
      });
    }
  }

  it(`${name}: refuses states it does not offer, naming its flags`, () => {
    for (const s of MIGRATION_STATES) {
      if (s === 'ERROR' || offered.includes(s)) continue;
      const e = refusal(() => findMigrationPath(flags, 'RUNNING', s));
      expect(e.code).toBe('EMIGSTATE');
      expect(e.message).toContain(name);
      expect(e.hint).toMatch(/offered: /);
    }
  });

  it(`${name}: ERROR is never asked for and only a reset leaves it`, () => {
    expect(refusal(() => findMigrationPath(flags, 'RUNNING', 'ERROR')).code).toBe('EMIGERROR');
    const e = refusal(() => findMigrationPath(flags, 'ERROR', 'RUNNING'));
    expect(e.code).toBe('EMIGERROR');
    expect(e.hint).toContain('VFIO_DEVICE_RESET');
  });

  it(`${name}: the arc tour crosses every arc, one request at a time`, () => {
    const tour = arcTour(flags);
    const crossed = new Set<string>();
    let at: MigrationState = 'RUNNING';
    for (const s of tour) {
      expect(findMigrationPath(flags, at, s).arcs).toHaveLength(1);
      crossed.add(`${at}>${s}`);
      at = s;
    }
    expect([...crossed].sort()).toEqual([...documented].sort());
  });
});

describe('the combination transitions the uAPI documents (every feature)', () => {
  const all = { stopCopy: true, p2p: true, preCopy: true };
  it.each([
    'PRE_COPY PRE_COPY_P2P STOP_COPY',
    'PRE_COPY RUNNING RUNNING_P2P',
    'PRE_COPY RUNNING RUNNING_P2P STOP',
    'PRE_COPY RUNNING RUNNING_P2P STOP RESUMING',
    'PRE_COPY_P2P RUNNING_P2P RUNNING',
    'PRE_COPY_P2P RUNNING_P2P STOP',
    'PRE_COPY_P2P RUNNING_P2P STOP RESUMING',
    'RESUMING STOP RUNNING_P2P',
    'RESUMING STOP RUNNING_P2P PRE_COPY_P2P',
    'RESUMING STOP RUNNING_P2P RUNNING',
    'RESUMING STOP RUNNING_P2P RUNNING PRE_COPY',
    'RESUMING STOP STOP_COPY',
    'RUNNING RUNNING_P2P PRE_COPY_P2P',
    'RUNNING RUNNING_P2P STOP',
    'RUNNING RUNNING_P2P STOP RESUMING',
    'RUNNING RUNNING_P2P STOP STOP_COPY',
    'RUNNING_P2P RUNNING PRE_COPY',
    'RUNNING_P2P STOP RESUMING',
    'RUNNING_P2P STOP STOP_COPY',
    'STOP RUNNING_P2P PRE_COPY_P2P',
    'STOP RUNNING_P2P RUNNING',
    'STOP RUNNING_P2P RUNNING PRE_COPY',
    'STOP_COPY STOP RESUMING',
    'STOP_COPY STOP RUNNING_P2P',
    'STOP_COPY STOP RUNNING_P2P RUNNING',
  ])('%s', (line) => {
    const states = line.split(' ') as MigrationState[];
    expect(findMigrationPath(all, states[0]!, states.at(-1)!).states).toEqual(states);
  });

  it('says which arcs open, continue and end a data session', () => {
    const effect = (from: MigrationState, to: MigrationState): string =>
      findMigrationPath(all, from, to).arcs[0]!.effect;
    expect(effect('STOP', 'STOP_COPY')).toBe('save');
    expect(effect('RUNNING', 'PRE_COPY')).toBe('save');
    expect(effect('RUNNING_P2P', 'PRE_COPY_P2P')).toBe('save');
    expect(effect('PRE_COPY_P2P', 'STOP_COPY')).toBe('continue');
    expect(effect('STOP', 'RESUMING')).toBe('resume');
    expect(effect('RESUMING', 'STOP')).toBe('end');
    expect(effect('STOP_COPY', 'STOP')).toBe('end');
    expect(effect('PRE_COPY', 'RUNNING')).toBe('end');
    expect(effect('PRE_COPY', 'PRE_COPY_P2P')).toBe('none');
    expect(effect('RUNNING', 'RUNNING_P2P')).toBe('none');
    expect(findMigrationPath(all, 'PRE_COPY', 'STOP_COPY').dataFd).toBeNull();
    expect(findMigrationPath(all, 'RUNNING', 'STOP_COPY').dataFd).toBe('save');
  });
});

describe('arguments', () => {
  it('refuses a device without STOP_COPY and names that it has no migration', () => {
    const e = refusal(() =>
      findMigrationPath({ stopCopy: false, p2p: true, preCopy: true }, 'RUNNING', 'STOP'),
    );
    expect(e.code).toBe('ENOMIGRATION');
    expect(migrationArcs({ stopCopy: false, p2p: false, preCopy: false })).toEqual([]);
  });

  it('refuses a state name it does not know with a TypeError', () => {
    const flags = FLAG_SETS[3]!;
    expect(() => findMigrationPath(flags, 'RUNNING', 'PAUSED' as MigrationState)).toThrow(
      /to must be one of ERROR, STOP, RUNNING/,
    );
  });
});
