import { MemoryRegion, transaction, type FlatRange, type MemoryListener } from '../../../lib';
import { renderFlatView } from '../../../lib/memory/flat-view-render';
import { flatViewChange, MemoryListeners } from '../../../lib/memory/listeners';
import { closeAll, space } from './helpers';

afterEach(closeAll);

const fmt = (r: FlatRange): string =>
  `${r.region.name}@${r.addr.toString(16)}+${r.size.toString(16)}:${r.offsetInRegion.toString(16)}${r.readonly ? ':ro' : ''}`;

function recorder(tag = ''): { l: MemoryListener; events: string[] } {
  const events: string[] = [];
  return {
    events,
    l: {
      begin: () => events.push(`${tag}begin`),
      regionDel: (r) => events.push(`${tag}del ${fmt(r)}`),
      regionAdd: (r) => events.push(`${tag}add ${fmt(r)}`),
      commit: () => events.push(`${tag}commit`),
    },
  };
}

describe('memory listeners', () => {
  test('a late listener hears an add for everything already there', () => {
    const root = MemoryRegion.container('root', 0x10000);
    root.addSubregion(MemoryRegion.ram('a', 0x100), 0x1000);
    root.addSubregion(MemoryRegion.ram('b', 0x100), 0x2000);
    const as = space(root);
    const { l, events } = recorder();
    as.addMemoryListener(l);
    expect(events).toEqual(['begin', 'add a@1000+100:0', 'add b@2000+100:0', 'commit']);
  });

  test('each commit delivers ordered deletions, then additions', () => {
    const root = MemoryRegion.container('root', 0x10000);
    const bar = MemoryRegion.ram('bar', 0x1000);
    const bg = MemoryRegion.ram('bg', 0x10000);
    root.addSubregion(bg, 0, -1);
    root.addSubregion(bar, 0x4000);
    const as = space(root);
    const { l, events } = recorder();
    as.addMemoryListener(l);
    events.length = 0;
    bar.setOffset(0x8000);
    expect(events).toEqual([
      'begin',
      'del bg@0+4000:0',
      'del bar@4000+1000:0',
      'del bg@5000+b000:5000',
      'add bg@0+8000:0',
      'add bar@8000+1000:0',
      'add bg@9000+7000:9000',
      'commit',
    ]);
  });

  test('unchanged ranges are neither deleted nor added, and keep their identity', () => {
    const root = MemoryRegion.container('root', 0x10000);
    const a = MemoryRegion.ram('a', 0x100);
    const b = MemoryRegion.ram('b', 0x100);
    root.addSubregion(a, 0x1000);
    root.addSubregion(b, 0x2000);
    const as = space(root);
    const before = as.flatView.lookup(0x1000);
    const { l, events } = recorder();
    as.addMemoryListener(l);
    events.length = 0;
    b.setOffset(0x3000);
    expect(events).toEqual(['begin', 'del b@2000+100:0', 'add b@3000+100:0', 'commit']);
    expect(as.flatView.lookup(0x1000)).toBe(before);
  });

  test('a transaction is one notification; a no-op commit is none', () => {
    const root = MemoryRegion.container('root', 0x10000);
    const as = space(root);
    const { l, events } = recorder();
    as.addMemoryListener(l);
    events.length = 0;
    const x = MemoryRegion.ram('x', 0x10);
    transaction(() => {
      root.addSubregion(x, 0);
      x.setOffset(0x100);
      root.addSubregion(MemoryRegion.ram('y', 0x10), 0x200);
    });
    expect(events).toEqual(['begin', 'add x@100+10:0', 'add y@200+10:0', 'commit']);
    events.length = 0;
    transaction(() => {
      x.setEnabled(false);
      x.setEnabled(true);
    });
    expect(events).toEqual([]);
  });

  test('deletions go to the newest listener first, additions to the oldest first', () => {
    const root = MemoryRegion.container('root', 0x10000);
    const r = MemoryRegion.ram('r', 0x10);
    root.addSubregion(r, 0);
    const as = space(root);
    const order: string[] = [];
    const mk = (t: string): MemoryListener => ({
      regionDel: () => order.push(`${t}-del`),
      regionAdd: () => order.push(`${t}-add`),
    });
    as.addMemoryListener(mk('A'));
    as.addMemoryListener(mk('B'));
    order.length = 0;
    r.setOffset(0x10);
    expect(order).toEqual(['B-del', 'A-del', 'A-add', 'B-add']);
  });

  test('removing a listener tells it to delete everything; removing twice is harmless', () => {
    const root = MemoryRegion.container('root', 0x10000);
    root.addSubregion(MemoryRegion.ram('a', 0x10), 0);
    const as = space(root);
    const { l, events } = recorder();
    const remove = as.addMemoryListener(l);
    events.length = 0;
    remove();
    remove();
    expect(events).toEqual(['begin', 'del a@0+10:0', 'commit']);
    events.length = 0;
    root.addSubregion(MemoryRegion.ram('b', 0x10), 0x100);
    expect(events).toEqual([]);
  });

  test('closing the address space deletes everything for its listeners', () => {
    const root = MemoryRegion.container('root', 0x10000);
    root.addSubregion(MemoryRegion.ram('a', 0x10), 0);
    const as = space(root);
    const { l, events } = recorder();
    as.addMemoryListener(l);
    events.length = 0;
    as.close();
    expect(events).toEqual(['begin', 'del a@0+10:0', 'commit']);
  });

  test('a throwing listener does not stop the others, and its error reaches the committer', () => {
    const root = MemoryRegion.container('root', 0x10000);
    const as = space(root);
    const good = recorder();
    as.addMemoryListener({
      regionAdd: () => {
        throw new Error('listener failed');
      },
    });
    as.addMemoryListener(good.l);
    good.events.length = 0;
    expect(() => root.addSubregion(MemoryRegion.ram('a', 0x10), 0)).toThrow('listener failed');
    expect(good.events).toEqual(['begin', 'add a@0+10:0', 'commit']);
    expect(as.flatView.ranges).toHaveLength(1);
    let armed = true;
    as.addMemoryListener({
      regionDel: () => {
        if (armed) throw new Error('second');
      },
    });
    expect(() => as.flatView.ranges[0].region.setOffset(0x20)).toThrow(AggregateError);
    expect(as.flatView.ranges[0].addr).toBe(0x20);
    armed = false;
  });

  test('each address space notifies only its own listeners', () => {
    const mem = MemoryRegion.container('mem', 0x10000);
    const io = MemoryRegion.container('io', 0x10000);
    const m = recorder('m:');
    const i = recorder('i:');
    space(mem, 'memory').addMemoryListener(m.l);
    space(io, 'I/O').addMemoryListener(i.l);
    m.events.length = 0;
    i.events.length = 0;
    io.addSubregion(MemoryRegion.ram('port', 4), 0xcf8);
    expect(m.events).toEqual([]);
    expect(i.events).toEqual(['i:begin', 'i:add port@cf8+4:0', 'i:commit']);
  });

  test('bad listeners are TypeErrors', () => {
    const as = space(MemoryRegion.container('root', 1));
    expect(() => as.addMemoryListener(null as never)).toThrow(TypeError);
  });
});

describe('flatViewChange and MemoryListeners', () => {
  test('a change is told by range identity: a re-rendering that reuses every range is none', () => {
    const root = MemoryRegion.container('root', 0x1000);
    root.addSubregion(MemoryRegion.ram('a', 0x10), 0);
    const first = renderFlatView(root);
    expect(flatViewChange(first, renderFlatView(root, first))).toBeNull();
    const fresh = renderFlatView(root);
    expect(flatViewChange(first, fresh)).toEqual({ dels: first.ranges, adds: fresh.ranges });
  });

  test('notify calls every listener, collects what they throw, and unsubscribing twice is harmless', () => {
    const root = MemoryRegion.container('root', 0x1000);
    const before = renderFlatView(root);
    root.addSubregion(MemoryRegion.ram('a', 0x10), 0);
    const after = renderFlatView(root, before);
    const list = new MemoryListeners();
    const a = recorder('a:');
    const bad: MemoryListener = {
      regionAdd: () => {
        throw new Error('listener bug');
      },
    };
    const offA = list.add(a.l, before.ranges, () => after.ranges);
    list.add(bad, before.ranges, () => after.ranges);
    const errors: unknown[] = [];
    list.notify(flatViewChange(before, after)!, errors);
    expect(errors).toEqual([new Error('listener bug')]);
    expect(a.events).toEqual(['a:begin', 'a:commit', 'a:begin', 'a:add a@0+10:0', 'a:commit']);
    offA();
    offA();
    expect(a.events.slice(5)).toEqual(['a:begin', 'a:del a@0+10:0', 'a:commit']);
  });
});
