import fc from 'fast-check';
import {
  AddressSpace,
  BufferMemory,
  MemoryRegion,
  MemoryTopologyError,
  transaction,
  type AccessLength,
  type FlatRange,
} from '../../../lib';
import { closeAll, space } from './helpers';
import { Reference } from './reference';

afterEach(closeAll);

/** Largest address any generated tree can reach: root offset (< 64) plus root size (<= 64). */
const DOMAIN = 160;
const CAPACITY = 64;

type Kind = 'container' | 'ram' | 'io' | 'ramd' | 'alias';
interface RegionSpec {
  kind: Kind;
  size: number;
  target: number;
  aliasOffset: number;
}
type Op =
  | { t: 'add'; child: number; parent: number; offset: number; prio: number }
  | { t: 'remove'; child: number }
  | { t: 'move'; child: number; offset: number }
  | { t: 'resize'; child: number; size: number }
  | { t: 'enable'; child: number; value: boolean }
  | { t: 'prio'; child: number; prio: number }
  | { t: 'readonly'; child: number; value: boolean }
  | { t: 'aliasOffset'; child: number; offset: number }
  | { t: 'commit' };

const idx = fc.nat({ max: 15 });
const offset = fc.integer({ min: 0, max: 63 });
const prio = fc.integer({ min: -1, max: 1 });
const regionSpec: fc.Arbitrary<RegionSpec> = fc.record({
  kind: fc.constantFrom<Kind>('container', 'container', 'ram', 'io', 'ramd', 'ramd', 'alias', 'alias'),
  size: fc.integer({ min: 0, max: CAPACITY }),
  target: fc.nat(),
  aliasOffset: fc.integer({ min: 0, max: CAPACITY }),
});
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ t: fc.constant('add' as const), child: idx, parent: idx, offset, prio }),
  },
  fc.record({ t: fc.constant('remove' as const), child: idx }),
  { weight: 2, arbitrary: fc.record({ t: fc.constant('move' as const), child: idx, offset }) },
  fc.record({ t: fc.constant('resize' as const), child: idx, size: fc.integer({ min: 0, max: CAPACITY }) }),
  fc.record({ t: fc.constant('enable' as const), child: idx, value: fc.boolean() }),
  fc.record({ t: fc.constant('prio' as const), child: idx, prio }),
  fc.record({ t: fc.constant('readonly' as const), child: idx, value: fc.boolean() }),
  fc.record({ t: fc.constant('aliasOffset' as const), child: idx, offset }),
  { weight: 2, arbitrary: fc.constant({ t: 'commit' as const }) },
);
const scenario = fc.record({
  rootSize: fc.integer({ min: 16, max: 64 }),
  regions: fc.array(regionSpec, { minLength: 1, maxLength: 12 }),
  placements: fc.array(fc.record({ parent: fc.nat(), offset, prio }), { maxLength: 12 }),
  ops: fc.array(op, { maxLength: 30 }),
});

/** The regions of one scenario, with host-side storage for every byte they can serve. */
class World {
  readonly regions: MemoryRegion[] = [];
  readonly ref = new Reference();
  /** Bytes behind each ram, ram-device and io region, as the model sees them. */
  readonly store = new Map<MemoryRegion, Uint8Array>();

  constructor(rootSize: number, specs: RegionSpec[]) {
    this.regions.push(MemoryRegion.container('root', rootSize));
    specs.forEach((s, i) => {
      const name = `${s.kind}${i + 1}`;
      let r: MemoryRegion;
      if (s.kind === 'container') {
        r = MemoryRegion.container(name, s.size);
      } else if (s.kind === 'ram') {
        const buf = new ArrayBuffer(CAPACITY);
        r = MemoryRegion.ram(name, s.size, buf);
        this.store.set(r, new Uint8Array(buf));
      } else if (s.kind === 'ramd') {
        const mem = new BufferMemory(CAPACITY);
        r = MemoryRegion.ramDevice(name, s.size, mem);
        this.store.set(r, new Uint8Array(mem.buffer));
      } else if (s.kind === 'io') {
        const bytes = new Uint8Array(CAPACITY + 8);
        r = MemoryRegion.io(name, s.size, {
          read(o, sz) {
            let v = 0n;
            for (let k = 0; k < sz; k++) v |= BigInt(bytes[o + k]) << BigInt(8 * k);
            return sz === 8 ? v : Number(v);
          },
          write(o, sz, value) {
            const v = BigInt(value);
            for (let k = 0; k < sz; k++) bytes[o + k] = Number((v >> BigInt(8 * k)) & 0xffn);
          },
          valid: { minAccessSize: 1, maxAccessSize: 8, unaligned: true },
          impl: { minAccessSize: 1, maxAccessSize: 8, unaligned: true },
        });
        this.store.set(r, bytes);
      } else {
        const target = this.regions[s.target % this.regions.length];
        const off = Math.min(s.aliasOffset, target.size);
        r = MemoryRegion.alias(name, target, off, Math.min(s.size, target.size - off));
      }
      this.regions.push(r);
    });
  }

  at(i: number): MemoryRegion {
    return this.regions[i % this.regions.length];
  }

  /** Applies one operation, checking that every refusal is the right one. */
  apply(o: Exclude<Op, { t: 'commit' }>): void {
    const r = this.at(o.child);
    switch (o.t) {
      case 'add': {
        const parent = this.at(o.parent);
        const expected =
          parent.kind === 'alias'
            ? 'not-a-container'
            : r.parent !== null
              ? 'already-attached'
              : Reference.reaches(r, parent)
                ? 'cycle'
                : null;
        try {
          parent.addSubregion(r, o.offset, o.prio);
          this.ref.noteAdded(r);
          expect(expected).toBeNull();
        } catch (e) {
          if (!(e instanceof MemoryTopologyError)) throw e;
          expect(e.code).toBe(expected);
        }
        return;
      }
      case 'remove':
        if (r.parent === null) {
          expect(() => this.regions[0].removeSubregion(r)).toThrow(MemoryTopologyError);
        } else {
          r.parent.removeSubregion(r);
        }
        return;
      case 'move':
        // A move re-adds the region (QEMU's memory_region_set_address): newest among equals.
        if (r.parent !== null && r.offset !== o.offset) this.ref.noteAdded(r);
        r.setOffset(o.offset);
        return;
      case 'resize':
        if (r.kind === 'alias' && r.aliasOffset + o.size > r.aliasTarget!.size) {
          expect(() => r.setSize(o.size)).toThrow(RangeError);
        } else {
          r.setSize(o.size);
        }
        return;
      case 'enable':
        r.setEnabled(o.value);
        return;
      case 'prio':
        if (r.parent !== null && r.priority !== o.prio) this.ref.noteAdded(r);
        r.setPriority(o.prio);
        return;
      case 'readonly':
        r.setReadonly(o.value);
        return;
      case 'aliasOffset':
        if (r.kind !== 'alias') expect(() => r.setAliasOffset(o.offset)).toThrow(MemoryTopologyError);
        else if (o.offset + r.size > r.aliasTarget!.size)
          expect(() => r.setAliasOffset(o.offset)).toThrow(RangeError);
        else r.setAliasOffset(o.offset);
        return;
    }
  }

  /** Builds the initial tree and runs the operations, one transaction per run of ops between commits. */
  run(
    placements: Array<{ parent: number; offset: number; prio: number }>,
    ops: Op[],
    afterCommit: () => void,
    as: () => AddressSpace,
  ): void {
    transaction(() => {
      placements.forEach((p, i) => {
        if (i + 1 < this.regions.length) {
          this.apply({ t: 'add', child: i + 1, parent: p.parent % (i + 1), offset: p.offset, prio: p.prio });
        }
      });
    });
    afterCommit();
    let chunk: Array<Exclude<Op, { t: 'commit' }>> = [];
    const flush = (): void => {
      const before = as().flatView;
      transaction(() => {
        for (const o of chunk) {
          this.apply(o);
          // Nothing is visible before the outermost commit.
          expect(as().flatView).toBe(before);
        }
      });
      chunk = [];
      afterCommit();
    };
    for (const o of ops) {
      if (o.t === 'commit') flush();
      else chunk.push(o);
    }
    flush();
  }
}

const plain = (r: FlatRange): object => ({
  addr: r.addr,
  size: r.size,
  region: r.region,
  offsetInRegion: r.offsetInRegion,
  readonly: r.readonly,
});

function checkFlatView(w: World, as: AddressSpace): void {
  const got = as.flatView.ranges;
  const want = w.ref.flatten(as.root, DOMAIN);
  expect(got.map(plain)).toEqual(want);
  for (const r of got) {
    expect(r.kind).toBe(r.region.kind);
    expect(r.addr + r.size).toBeLessThanOrEqual(DOMAIN);
  }
  const looked: unknown[] = [];
  const resolved: unknown[] = [];
  for (let a = 0; a < DOMAIN; a++) {
    const h = w.ref.resolve(as.root, a);
    const r = as.flatView.lookup(a);
    resolved.push(h === null ? null : [h.region.name, h.offset, h.readonly]);
    looked.push(r === undefined ? null : [r.region.name, r.offsetInRegion + (a - r.addr), r.readonly]);
  }
  expect(looked).toEqual(resolved);
}

describe('property: flat view and lookup match the byte-by-byte reference', () => {
  test('random trees with nesting, priorities, overlaps, disabled regions, aliases, moves and resizes', () => {
    fc.assert(
      fc.property(scenario, fc.array(fc.nat(), { maxLength: 3 }), (sc, extraRoots) => {
        const w = new World(sc.rootSize, sc.regions);
        // Besides the main one, address spaces rooted inside the tree or at alias targets: each must
        // be rebuilt exactly when a change can reach it.
        const spaces = [space(w.regions[0]), ...extraRoots.map((k, i) => space(w.at(k), `extra${i}`))];
        try {
          w.run(
            sc.placements,
            sc.ops,
            () => spaces.forEach((as) => checkFlatView(w, as)),
            () => spaces[0],
          );
        } finally {
          closeAll();
        }
      }),
      { numRuns: 100 },
    );
  });
});

const access = fc.record({
  addr: fc.integer({ min: 0, max: DOMAIN - 1 }),
  // Often aim at a range of the current view, or at the previous address again, so that accesses
  // keep hitting ranges that the commits in between have moved, resized or hidden.
  aim: fc.option(fc.nat(), { freq: 2 }),
  // Every length KVM reports: 3, 5, 6 and 7 are split into naturally aligned pieces.
  size: fc.constantFrom<AccessLength>(1, 2, 3, 4, 5, 6, 7, 8),
  write: fc.boolean(),
  value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
});

describe('property: dispatch matches the byte-by-byte reference', () => {
  test('reads and writes across ranges, holes, read-only ranges and every region kind', () => {
    fc.assert(
      fc.property(scenario, fc.array(access, { minLength: 1, maxLength: 40 }), (sc, accesses) => {
        const w = new World(sc.rootSize, sc.regions);
        const as = space(w.regions[0]);
        // Fill every store with a recognisable pattern, and mirror it as the reference's memory.
        const shadow = new Map<MemoryRegion, Uint8Array>();
        let seed = 1;
        for (const [r, bytes] of w.store) {
          for (let k = 0; k < bytes.length; k++) bytes[k] = seed = (seed * 73 + 41) & 0xff;
          shadow.set(r, bytes.slice());
        }
        const queue = accesses.slice();
        let previous = 0;
        // A few accesses after every commit, so that the topology changes between them.
        const drain = (n: number): void => {
          for (const a of queue.splice(0, n)) {
            const ranges = as.flatView.ranges;
            let addr = a.addr;
            if (a.aim !== null && a.aim % 2 === 0) addr = previous;
            else if (a.aim !== null && ranges.length > 0)
              addr = ranges[a.aim % ranges.length].addr + (a.addr % 4);
            previous = addr;
            const acc = { ...a, addr };
            const hits = Array.from({ length: acc.size }, (_, k) =>
              w.ref.resolve(w.regions[0], acc.addr + k),
            );
            if (acc.write) {
              const v = BigInt.asUintN(acc.size * 8, acc.value);
              as.write(acc.addr, acc.size, acc.size >= 7 ? v : Number(v));
              hits.forEach((h, k) => {
                if (h !== null && !h.readonly)
                  shadow.get(h.region)![h.offset] = Number((v >> BigInt(8 * k)) & 0xffn);
              });
            } else {
              let want = 0n;
              hits.forEach((h, k) => {
                const byte = h === null ? 0xff : shadow.get(h.region)![h.offset];
                want |= BigInt(byte) << BigInt(8 * k);
              });
              expect(as.read(acc.addr, acc.size)).toBe(acc.size >= 7 ? want : Number(want));
            }
          }
        };
        try {
          w.run(
            sc.placements,
            sc.ops,
            () => drain(8),
            () => as,
          );
          drain(queue.length);
          for (const [r, bytes] of w.store) expect(bytes).toEqual(shadow.get(r));
        } finally {
          closeAll();
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('property: replaying listener events reproduces the flat view', () => {
  test('early and late listeners, across random mutation sequences', () => {
    fc.assert(
      fc.property(scenario, fc.nat({ max: 30 }), (sc, lateAt) => {
        const w = new World(sc.rootSize, sc.regions);
        const as = space(w.regions[0]);
        const replicas: Array<Set<FlatRange>> = [];
        const follow = (): void => {
          const set = new Set<FlatRange>();
          let inCommit = false;
          as.addMemoryListener({
            begin: () => {
              expect(inCommit).toBe(false);
              inCommit = true;
            },
            regionDel: (r) => {
              expect(inCommit).toBe(true);
              expect(set.has(r)).toBe(true);
              set.delete(r);
            },
            regionAdd: (r) => {
              expect(inCommit).toBe(true);
              for (const o of set) expect(o.addr + o.size <= r.addr || r.addr + r.size <= o.addr).toBe(true);
              set.add(r);
            },
            commit: () => {
              inCommit = false;
            },
          });
          replicas.push(set);
        };
        follow();
        let commits = 0;
        try {
          w.run(
            sc.placements,
            sc.ops,
            () => {
              if (commits++ === lateAt) follow();
              for (const set of replicas) {
                expect([...set].sort((a, b) => a.addr - b.addr)).toEqual(as.flatView.ranges);
                for (const r of as.flatView.ranges) expect(set.has(r)).toBe(true);
              }
            },
            () => as,
          );
        } finally {
          closeAll();
        }
        for (const set of replicas) expect(set.size).toBe(0);
      }),
      { numRuns: 100 },
    );
  });
});
