import {
  BufferMemory,
  MemoryRegion,
  MemoryTopologyError,
  beginTransaction,
  commitTransaction,
  transaction,
  transactionDepth,
} from '../../../lib';
import { closeAll, flat, recordingIo, space } from './helpers';

afterEach(closeAll);

const ram = (name: string, size: number): MemoryRegion => MemoryRegion.ram(name, size);

describe('regions', () => {
  test('factories set kind, name, size and defaults', () => {
    const c = MemoryRegion.container('c', 0x1000);
    expect([c.kind, c.name, c.size, c.enabled, c.readonly, c.priority, c.offset, c.parent]).toEqual([
      'container',
      'c',
      0x1000,
      true,
      false,
      0,
      0,
      null,
    ]);
    expect(MemoryRegion.ram('r', 16).kind).toBe('ram');
    expect(MemoryRegion.ramDevice('d', 16, new BufferMemory(16)).kind).toBe('ram-device');
    expect(recordingIo('i', 16).region.kind).toBe('io');
    const a = MemoryRegion.alias('a', c, 0x10, 0x20);
    expect([a.kind, a.aliasTarget, a.aliasOffset, a.size]).toEqual(['alias', c, 0x10, 0x20]);
  });

  test('subregions are listed highest priority first, newest first among equals', () => {
    const c = MemoryRegion.container('c', 0x100);
    const a = ram('a', 1);
    const b = ram('b', 1);
    const d = ram('d', 1);
    const e = ram('e', 1);
    c.addSubregion(a, 0, 0);
    c.addSubregion(b, 0, 5);
    c.addSubregion(d, 0, 0);
    c.addSubregion(e, 0, -3);
    expect(c.subregions.map((r) => r.name)).toEqual(['b', 'd', 'a', 'e']);
    d.setPriority(9);
    expect(c.subregions.map((r) => r.name)).toEqual(['d', 'b', 'a', 'e']);
    expect(a.parent).toBe(c);
  });

  test('the higher priority sibling wins where siblings overlap', () => {
    const root = MemoryRegion.container('root', 0x100);
    root.addSubregion(ram('low', 0x40), 0x00, 1);
    root.addSubregion(ram('high', 0x20), 0x10, 2);
    const as = space(root);
    expect(flat(as)).toEqual([
      [0x00, 0x10, 'low', 0],
      [0x10, 0x20, 'high', 0],
      [0x30, 0x10, 'low', 0x30],
    ]);
  });

  test('among equal priorities the most recently added wins', () => {
    const root = MemoryRegion.container('root', 0x100);
    root.addSubregion(ram('first', 0x10), 0);
    root.addSubregion(ram('second', 0x10), 0);
    expect(flat(space(root))).toEqual([[0, 0x10, 'second', 0]]);
  });

  test('a moved or re-prioritised region is re-added: newest among equals, as in QEMU', () => {
    const root = MemoryRegion.container('root', 0x100);
    const older = ram('older', 0x10);
    const newer = ram('newer', 0x10);
    root.addSubregion(older, 0x10);
    root.addSubregion(newer, 0);
    const as = space(root);
    older.setOffset(0);
    expect(flat(as)).toEqual([[0, 0x10, 'older', 0]]);
    newer.setPriority(1);
    newer.setPriority(0);
    expect(flat(as)).toEqual([[0, 0x10, 'newer', 0]]);
  });

  test('priorities are compared only among siblings', () => {
    // A low-priority container's children beat a high-priority region nowhere: only the container's
    // own priority against its sibling counts.
    const root = MemoryRegion.container('root', 0x100);
    const box = MemoryRegion.container('box', 0x100);
    box.addSubregion(ram('inner', 0x10), 0, 1000);
    root.addSubregion(box, 0, 1);
    root.addSubregion(ram('outer', 0x10), 0, 2);
    expect(flat(space(root))).toEqual([[0, 0x10, 'outer', 0]]);
  });

  test('holes in a higher-priority container show the sibling beneath', () => {
    const root = MemoryRegion.container('root', 0x100);
    root.addSubregion(ram('under', 0x100), 0, 0);
    const over = MemoryRegion.container('over', 0x80);
    over.addSubregion(ram('x', 0x10), 0x10);
    root.addSubregion(over, 0x40, 1);
    expect(flat(space(root))).toEqual([
      [0x00, 0x50, 'under', 0],
      [0x50, 0x10, 'x', 0],
      [0x60, 0xa0, 'under', 0x60],
    ]);
  });

  test('an io region with subregions serves its own holes', () => {
    const root = MemoryRegion.container('root', 0x100);
    const dev = recordingIo('dev', 0x40).region;
    dev.addSubregion(ram('window', 0x10), 0x10);
    root.addSubregion(dev, 0);
    expect(flat(space(root))).toEqual([
      [0x00, 0x10, 'dev', 0],
      [0x10, 0x10, 'window', 0],
      [0x20, 0x20, 'dev', 0x20],
    ]);
  });

  test('whatever lies outside a container is clipped', () => {
    const root = MemoryRegion.container('root', 0x100);
    const box = MemoryRegion.container('box', 0x20);
    box.addSubregion(ram('wide', 0x100), 0x08);
    root.addSubregion(box, 0xf0);
    // wide starts at 0xf8; the box would end at 0x110 and wide far beyond, but the root ends at 0x100.
    expect(flat(space(root))).toEqual([[0xf8, 0x08, 'wide', 0]]);
    box.setSize(0x0c);
    expect(flat(space(root))).toEqual([[0xf8, 0x04, 'wide', 0]]);
  });

  test('aliases show their target at the alias position, clipped to the window', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const mem = ram('mem', 0x100);
    root.addSubregion(MemoryRegion.alias('win', mem, 0x40, 0x20), 0x800);
    // The target's own placement does not move what the alias shows.
    const other = MemoryRegion.container('other', 0x1000);
    other.addSubregion(mem, 0x300);
    expect(flat(space(root))).toEqual([[0x800, 0x20, 'mem', 0x40]]);
  });

  test('aliases of aliases and aliases into containers resolve to terminal regions', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const box = MemoryRegion.container('box', 0x100);
    box.addSubregion(ram('a', 0x10), 0x00);
    box.addSubregion(ram('b', 0x10), 0x20);
    const outer = MemoryRegion.alias('outer', box, 0x08, 0x30);
    const inner = MemoryRegion.alias('inner', outer, 0x04, 0x20);
    root.addSubregion(inner, 0x100);
    // inner shows box[0x0c..0x2c): a[0x0c..0x10), a hole, b[0x20..0x2c).
    expect(flat(space(root))).toEqual([
      [0x100, 0x4, 'a', 0xc],
      [0x114, 0xc, 'b', 0],
    ]);
  });

  test('readonly on a region or on an alias above it makes its ranges read-only', () => {
    const root = MemoryRegion.container('root', 0x100);
    const rom = ram('rom', 0x10);
    rom.setReadonly(true);
    const mem = ram('mem', 0x10);
    const ro = MemoryRegion.alias('ro', mem, 0, 0x10);
    ro.setReadonly(true);
    root.addSubregion(rom, 0);
    root.addSubregion(ro, 0x20);
    root.addSubregion(mem, 0x40);
    expect(flat(space(root))).toEqual([
      [0x00, 0x10, 'rom', 0, true],
      [0x20, 0x10, 'mem', 0, true],
      [0x40, 0x10, 'mem', 0],
    ]);
  });

  test('adjacent ranges of one region with contiguous offsets are merged', () => {
    const root = MemoryRegion.container('root', 0x100);
    const mem = ram('mem', 0x40);
    root.addSubregion(MemoryRegion.alias('lo', mem, 0, 0x20), 0x00);
    root.addSubregion(MemoryRegion.alias('hi', mem, 0x20, 0x20), 0x20);
    // Not contiguous in offset: stays split.
    root.addSubregion(MemoryRegion.alias('again', mem, 0, 0x10), 0x40);
    expect(flat(space(root))).toEqual([
      [0x00, 0x40, 'mem', 0],
      [0x40, 0x10, 'mem', 0],
    ]);
  });

  test('disabled regions and disabled alias targets vanish', () => {
    const root = MemoryRegion.container('root', 0x100);
    const under = ram('under', 0x100);
    const over = ram('over', 0x10);
    root.addSubregion(under, 0);
    root.addSubregion(over, 0, 1);
    const as = space(root);
    expect(flat(as)[0]).toEqual([0, 0x10, 'over', 0]);
    over.setEnabled(false);
    expect(flat(as)).toEqual([[0, 0x100, 'under', 0]]);
    const target = ram('target', 0x10);
    root.removeSubregion(under);
    root.addSubregion(MemoryRegion.alias('al', target, 0, 0x10), 0x80);
    expect(flat(as)).toEqual([[0x80, 0x10, 'target', 0]]);
    target.setEnabled(false);
    expect(flat(as)).toEqual([]);
  });

  test('mutations: move, resize, enable, priority, remove, alias offset', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const bar = ram('bar', 0x100);
    root.addSubregion(bar, 0x100);
    const as = space(root);
    bar.setOffset(0x400);
    expect(flat(as)).toEqual([[0x400, 0x100, 'bar', 0]]);
    bar.setSize(0x80);
    expect(flat(as)).toEqual([[0x400, 0x80, 'bar', 0]]);
    const bg = ram('bg', 0x1000);
    root.addSubregion(bg, 0, 1);
    expect(flat(as)).toEqual([[0, 0x1000, 'bg', 0]]);
    bar.setPriority(2);
    expect(flat(as)).toEqual([
      [0, 0x400, 'bg', 0],
      [0x400, 0x80, 'bar', 0],
      [0x480, 0xb80, 'bg', 0x480],
    ]);
    root.removeSubregion(bg);
    expect(bg.parent).toBeNull();
    const al = MemoryRegion.alias('al', bar, 0, 0x10);
    root.addSubregion(al, 0);
    al.setAliasOffset(0x20);
    expect(flat(as)[0]).toEqual([0, 0x10, 'bar', 0x20]);
  });

  test('a zero-sized region contributes nothing', () => {
    const root = MemoryRegion.container('root', 0x100);
    root.addSubregion(ram('empty', 0), 0x10);
    expect(flat(space(root))).toEqual([]);
  });

  test('a ram region whose buffer was detached shows what lies beneath, so guest accesses are unassigned', () => {
    const backing = new ArrayBuffer(0x100);
    new DataView(backing).setUint32(0, 0x11223344, true);
    const gone = MemoryRegion.ram('gone', 0x100, backing);
    const below = ram('below', 0x200);
    // What GuestRam.close does to its windows: the region stays, its memory does not.
    structuredClone(backing, { transfer: [backing] });
    expect(backing.byteLength).toBe(0);
    const root = MemoryRegion.container('root', 0x1000);
    root.addSubregion(below, 0);
    root.addSubregion(gone, 0x100, 1);
    root.addSubregion(MemoryRegion.ram('over', 0x10), 0x180, 2);
    const seen: string[] = [];
    const as = space(root);
    as.on('unassigned', (e) => seen.push(`${e.reason}@${e.addr.toString(16)}`));
    expect(flat(as)).toEqual([
      [0, 0x180, 'below', 0],
      [0x180, 0x10, 'over', 0],
      [0x190, 0x70, 'below', 0x190],
    ]);
    root.removeSubregion(below);
    expect(flat(as)).toEqual([[0x180, 0x10, 'over', 0]]);
    expect(as.read(0x100, 4)).toBe(0xffffffff);
    as.write(0x104, 4, 1);
    expect(seen).toEqual(['unassigned@100', 'unassigned@104']);
  });
});

describe('transactions', () => {
  test('the flat view is rebuilt once, at the outermost commit', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const as = space(root);
    const commits: number[] = [];
    as.addMemoryListener({ commit: () => commits.push(as.flatView.ranges.length) });
    commits.length = 0;
    beginTransaction();
    root.addSubregion(ram('a', 0x10), 0);
    beginTransaction();
    root.addSubregion(ram('b', 0x10), 0x20);
    commitTransaction();
    expect(transactionDepth()).toBe(1);
    expect(as.flatView.ranges).toHaveLength(0);
    root.addSubregion(ram('c', 0x10), 0x40);
    commitTransaction();
    expect(transactionDepth()).toBe(0);
    expect(commits).toEqual([3]);
  });

  test('a mutation outside a transaction commits at once', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const as = space(root);
    root.addSubregion(ram('a', 0x10), 0);
    expect(as.flatView.ranges).toHaveLength(1);
  });

  test('transaction() commits even when the body throws', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const as = space(root);
    expect(() =>
      transaction(() => {
        root.addSubregion(ram('a', 0x10), 0);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(transactionDepth()).toBe(0);
    expect(as.flatView.ranges).toHaveLength(1);
    expect(transaction(() => 42)).toBe(42);
  });

  test('commit without begin is refused', () => {
    expect(() => commitTransaction()).toThrow(MemoryTopologyError);
    try {
      commitTransaction();
    } catch (e) {
      expect((e as MemoryTopologyError).code).toBe('unbalanced-transaction');
    }
  });

  test('a listener cannot change the topology while it is being notified', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const as = space(root);
    const extra = ram('extra', 0x10);
    let seen: unknown;
    as.addMemoryListener({
      regionAdd: (r) => {
        if (r.region.name === 'a') {
          try {
            root.addSubregion(extra, 0x100);
          } catch (e) {
            seen = e;
          }
        }
      },
    });
    root.addSubregion(ram('a', 0x10), 0);
    expect(seen).toBeInstanceOf(MemoryTopologyError);
    expect((seen as MemoryTopologyError).code).toBe('reentrant-commit');
    expect(extra.parent).toBeNull();
  });
});

describe('bad input', () => {
  const root = (): MemoryRegion => MemoryRegion.container('root', 0x1000);

  test.each([-1, 0.5, NaN, Infinity, 2 ** 53])('size %p is a RangeError', (s) => {
    expect(() => MemoryRegion.container('c', s)).toThrow(RangeError);
    expect(() => MemoryRegion.ram('r', s)).toThrow(RangeError);
    expect(() => root().setSize(s)).toThrow(RangeError);
  });

  test.each([-1, 1.5, NaN, 2 ** 53])('offset %p is a RangeError', (o) => {
    expect(() => root().addSubregion(ram('x', 1), o)).toThrow(RangeError);
    expect(() => ram('x', 1).setOffset(o)).toThrow(RangeError);
  });

  test('the message names the value and the limit', () => {
    expect(() => root().addSubregion(ram('x', 1), -4)).toThrow(/-4 .*\[0, 9007199254740991\]/);
  });

  test.each([0.5, 2 ** 31, NaN])('priority %p is a RangeError', (p) => {
    expect(() => root().addSubregion(ram('x', 1), 0, p)).toThrow(RangeError);
  });

  test('wrong types are TypeErrors', () => {
    expect(() => root().addSubregion({} as MemoryRegion, 0)).toThrow(TypeError);
    expect(() => MemoryRegion.container(5 as unknown as string, 1)).toThrow(TypeError);
    expect(() => MemoryRegion.container('c', '5' as unknown as number)).toThrow(TypeError);
    expect(() => root().setEnabled(1 as unknown as boolean)).toThrow(TypeError);
    expect(() => MemoryRegion.io('i', 4, {} as never)).toThrow(TypeError);
    expect(() => MemoryRegion.ramDevice('d', 4, { length: 4 } as never)).toThrow(/read8/);
    expect(() => MemoryRegion.alias('a', 'x' as unknown as MemoryRegion, 0, 1)).toThrow(TypeError);
    expect(() => MemoryRegion.ram('r', 4, new Uint8Array(4) as unknown as ArrayBuffer)).toThrow(TypeError);
  });

  test('sizes beyond the backing are RangeErrors', () => {
    expect(() => MemoryRegion.ram('r', 16, new ArrayBuffer(8))).toThrow(RangeError);
    expect(() => MemoryRegion.ramDevice('d', 16, new BufferMemory(8))).toThrow(RangeError);
    expect(() => MemoryRegion.ram('r', 8, new ArrayBuffer(8)).setSize(9)).toThrow(RangeError);
    expect(() => MemoryRegion.ramDevice('d', 8, new BufferMemory(8)).setSize(9)).toThrow(RangeError);
    expect(() => MemoryRegion.alias('a', ram('t', 0x10), 0x8, 0x10)).toThrow(/exceeds its target/);
  });

  const code = (fn: () => void): string => {
    try {
      fn();
    } catch (e) {
      expect(e).toBeInstanceOf(MemoryTopologyError);
      return (e as MemoryTopologyError).code;
    }
    throw new Error('expected a MemoryTopologyError');
  };

  test('adding a region twice is refused', () => {
    const a = root();
    const b = root();
    const x = ram('x', 1);
    a.addSubregion(x, 0);
    expect(code(() => a.addSubregion(x, 0))).toBe('already-attached');
    expect(code(() => b.addSubregion(x, 0))).toBe('already-attached');
    expect(() => b.addSubregion(x, 0)).toThrow(/already a subregion of 'root'/);
  });

  test('adding a region into itself or into a cycle is refused', () => {
    const a = MemoryRegion.container('a', 0x100);
    const b = MemoryRegion.container('b', 0x100);
    const c = MemoryRegion.container('c', 0x100);
    expect(code(() => a.addSubregion(a, 0))).toBe('cycle');
    a.addSubregion(b, 0);
    b.addSubregion(c, 0);
    const top = MemoryRegion.container('top', 0x100);
    top.addSubregion(a, 0);
    expect(code(() => c.addSubregion(top, 0))).toBe('cycle');
    // Through an alias: c would contain a window onto a, which contains c.
    expect(code(() => c.addSubregion(MemoryRegion.alias('loop', a, 0, 0x10), 0))).toBe('cycle');
    // Through an alias of an alias.
    const al = MemoryRegion.alias('al', b, 0, 0x10);
    expect(code(() => c.addSubregion(MemoryRegion.alias('al2', al, 0, 0x10), 0))).toBe('cycle');
    expect(c.subregions).toHaveLength(0);
  });

  test('removing a region that is not a child is refused', () => {
    const a = root();
    const b = root();
    const x = ram('x', 1);
    expect(code(() => a.removeSubregion(x))).toBe('not-a-child');
    b.addSubregion(x, 0);
    expect(code(() => a.removeSubregion(x))).toBe('not-a-child');
    expect(() => a.removeSubregion(x)).toThrow(/a subregion of 'root'/);
  });

  test('an alias has no subregions', () => {
    const al = MemoryRegion.alias('al', root(), 0, 0x10);
    expect(code(() => al.addSubregion(ram('x', 1), 0))).toBe('not-a-container');
    expect(code(() => root().setAliasOffset(0))).toBe('not-an-alias');
    const t = MemoryRegion.ram('t', 0x10);
    const w = MemoryRegion.alias('w', t, 0x4, 0x8);
    expect(() => w.setAliasOffset(0x9)).toThrow(/exceeds its target 't'/);
    expect(() => w.setSize(0xd)).toThrow(RangeError);
    w.setAliasOffset(0x8);
    expect([w.aliasOffset, w.size]).toEqual([0x8, 0x8]);
  });
});
