// The address space: what becomes of an access no region takes (the count, the report to its
// guest-error sink, the deprecated 'unassigned' event) and its life cycle.
import { on, once } from 'node:events';
import {
  AddressSpace,
  GuestErrorSink,
  MemoryRegion,
  MemoryTopologyError,
  type GuestError,
  type UnassignedAccess,
} from '../../../lib';
import { closeAll, space, unassignedSpace as setup } from './helpers';

afterEach(closeAll);

describe('unassigned accesses', () => {
  test('logging is rate-limited and counts what it left out', () => {
    const root = MemoryRegion.container('root', 0x100);
    const lines: string[] = [];
    let now = 1_000_000;
    const spy = jest.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      const as = space(root, 'mem', { log: (l) => lines.push(l), logIntervalMs: 1000 });
      as.read(0x10, 4);
      as.read(0x14, 4);
      as.write(0x18, 2, 1);
      now += 1000;
      as.read(0x20, 1);
      // Through the space's own sink: the first in full, then a summary once the interval passed.
      expect(lines).toEqual([
        expect.stringMatching(
          /^mem: unassigned read at 0x10 size 4 \[memory\/unassigned, read-all-ones\] \(/,
        ),
        'memory/unassigned: 3 more (4 in all), the last: mem: unassigned read at 0x20 size 1 [memory/unassigned, read-all-ones]',
      ]);
      expect(as.unassignedCount).toBe(4);
      expect(as.guestErrors.counts).toEqual({ 'memory/unassigned': 4 });
    } finally {
      spy.mockRestore();
    }
  });

  test('the default log is a line on stderr, never a process warning', () => {
    const root = MemoryRegion.container('root', 0x100);
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const as = new AddressSpace('warned', root);
      as.read(0, 4);
      as.close();
      expect(err).toHaveBeenCalledWith(
        expect.stringMatching(/^vfio-bridge: warned: unassigned read at 0x0 size 4 \[memory\/unassigned/),
      );
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
      err.mockRestore();
    }
  });

  test('reports every refusal to the sink it was given, with its fields', () => {
    const root = MemoryRegion.container('root', 0x100);
    const sink = new GuestErrorSink({ log: null });
    const seen: GuestError[] = [];
    sink.on('guest-error', (e) => seen.push(e));
    const as = space(root, 'mem', { guestErrors: sink });
    as.write(0x10, 4, 0x1234);
    expect(seen).toEqual([
      expect.objectContaining({
        source: 'memory',
        kind: 'unassigned',
        where: 'mem',
        address: 0x10,
        width: 4,
        write: true,
        action: 'dropped',
        detail: { addr: 0x10, size: 4, isWrite: true, reason: 'unassigned' },
      }),
    ]);
    // The message is formatted when read, and serialised with the rest.
    expect(seen[0].message).toBe('mem: unassigned write at 0x10 size 4');
    expect(JSON.parse(JSON.stringify(seen[0]))).toMatchObject({
      kind: 'unassigned',
      message: seen[0].message,
    });
    expect(as.guestErrors).toBe(sink);
    expect(() => new AddressSpace('x', root, { guestErrors: sink, log: null })).toThrow(TypeError);
  });

  test('off() removes an unassigned handler', () => {
    const { as } = setup();
    const seen: number[] = [];
    const fn = (e: UnassignedAccess): void => void seen.push(e.addr);
    as.on('unassigned', fn);
    as.read(1, 1);
    as.off('unassigned', fn);
    as.read(2, 1);
    expect(seen).toEqual([1]);
  });

  test("'unassigned' is a node:events event: events.once and async iteration work, throwing listeners do not reach the access", async () => {
    const as = new AddressSpace('io', MemoryRegion.container('root', 0x100), { log: null });
    const first = once(as, 'unassigned');
    as.on('unassigned', () => {
      throw new Error('listener bug');
    });
    expect(as.read(7, 1)).toBe(0xff);
    const [e] = (await first) as [UnassignedAccess];
    expect(e).toMatchObject({ addr: 7, size: 1, isWrite: false });
    expect(as.listenerCount('unassigned')).toBe(1);
    const ac = new AbortController();
    const it = on(as, 'unassigned', { signal: ac.signal });
    as.write(9, 2, 0);
    const next = await it.next();
    expect((next.value as [UnassignedAccess])[0]).toMatchObject({ addr: 9, isWrite: true });
    ac.abort();
  });

  test('a closed address space refuses accesses and listeners', () => {
    const root = MemoryRegion.container('root', 0x100);
    root.addSubregion(MemoryRegion.ram('r', 0x10), 0);
    const as = new AddressSpace('gone', root, { log: null });
    as.close();
    as.close();
    expect(as.closed).toBe(true);
    expect(() => as.read(0, 4)).toThrow(MemoryTopologyError);
    expect(() => as.write(0, 4, 0)).toThrow(/closed/);
    expect(() => as.addMemoryListener({})).toThrow(/closed/);
    expect(as.flatView.ranges).toEqual([]);
  });
});

describe('a throwing unassigned listener', () => {
  test('neither throws out of the guest access nor stops the rest of a split write', () => {
    const root = MemoryRegion.container('root', 0x100);
    const ram = MemoryRegion.ram('ram', 0x10);
    root.addSubregion(ram, 0x10);
    const lines: string[] = [];
    const as = space(root, 'test', { log: (l) => lines.push(l), logIntervalMs: 0 });
    const seen: number[] = [];
    as.on('unassigned', () => {
      throw new Error('listener bug');
    });
    as.on('unassigned', (e) => seen.push(e.addr));
    // Bytes 0xc..0xf are unassigned, 0x10..0x13 are RAM.
    expect(() => as.write(0xc, 8, 0x1122334455667788n)).not.toThrow();
    expect(as.read(0x10, 4)).toBe(0x11223344);
    expect(as.read(0x0, 1)).toBe(0xff);
    expect(seen).toEqual([0xc, 0x0]);
    expect(lines.filter((l) => l.includes("an 'unassigned' listener threw: listener bug"))).toHaveLength(2);
  });
});
