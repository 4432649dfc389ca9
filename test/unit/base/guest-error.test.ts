// The guest-error sink: counts by (source, kind), the event and the iterator, the rate-limited log
// while nobody listens, and the forwarding a machine's own `guest-error` event uses.
import { EventEmitter } from 'node:events';

import { forwardGuestErrors, GuestErrorSink, type GuestError } from '../../../lib/base';

function unassigned(address: number): GuestError {
  return {
    source: 'memory',
    kind: 'unassigned',
    where: 'mem',
    address,
    width: 4,
    write: false,
    action: 'read-all-ones',
    message: `unassigned read at 0x${address.toString(16)}`,
    hint: 'nothing there',
  };
}

const fdError: GuestError = {
  source: 'pci',
  kind: 'fd-error',
  device: '0000:00:05.0',
  action: 'dropped',
  message: 'fd-error write',
};

/** Date.now() under the test's control. */
function clock(): { advance(ms: number): void; restore(): void } {
  let now = 1_000_000;
  const spy = jest.spyOn(Date, 'now').mockImplementation(() => now);
  return { advance: (ms) => void (now += ms), restore: () => spy.mockRestore() };
}

describe('GuestErrorSink', () => {
  test('counts every report by source/kind, by source, and in all', () => {
    const sink = new GuestErrorSink({ log: null });
    for (let i = 0; i < 3; i++) sink.report(unassigned(i));
    sink.report(fdError);
    expect(sink.counts).toEqual({ 'memory/unassigned': 3, 'pci/fd-error': 1 });
    expect([sink.count('memory'), sink.count('memory', 'unassigned'), sink.count('dma')]).toEqual([3, 3, 0]);
    expect(sink.total).toBe(4);
  });

  test("every report reaches 'guest-error' listeners, none rate-limited, and nothing is logged then", () => {
    const lines: string[] = [];
    const sink = new GuestErrorSink({ log: (l) => lines.push(l), logIntervalMs: 1e9 });
    const seen: GuestError[] = [];
    sink.on('guest-error', (e) => seen.push(e));
    for (let i = 0; i < 50; i++) sink.report(unassigned(i));
    expect(seen.map((e) => e.address)).toEqual([...Array(50).keys()]);
    expect(lines).toEqual([]);
  });

  test('a listener that throws is reported, not thrown, and the others still hear it', () => {
    const sink = new GuestErrorSink({ log: null });
    const seen: string[] = [];
    sink.on('guest-error', (e) => {
      if (e.kind !== 'listener-threw') throw new Error('boom');
    });
    sink.on('guest-error', (e) => seen.push(e.kind));
    expect(() => sink.report(unassigned(0))).not.toThrow();
    expect(seen).toEqual(['unassigned', 'listener-threw']);
    expect(sink.counts).toEqual({ 'memory/unassigned': 1, 'memory/listener-threw': 1 });
  });

  test('a listener that always throws is counted and logged, and cannot loop', () => {
    const lines: string[] = [];
    const sink = new GuestErrorSink({ log: (l) => lines.push(l) });
    sink.on('guest-error', () => {
      throw new Error('always');
    });
    sink.report(unassigned(0));
    expect(sink.counts).toEqual({ 'memory/unassigned': 1, 'memory/listener-threw': 2 });
    // The second listener-threw (thrown at the first one's delivery) is logged, not delivered.
    expect(lines).toEqual([
      "memory/listener-threw: 1 more (2 in all), the last: a 'guest-error' listener threw: always [memory/listener-threw, ignored]",
    ]);
  });

  test('watch() iterates the reports from now on and ends with its signal', async () => {
    const sink = new GuestErrorSink({ log: null });
    const ac = new AbortController();
    const got: number[] = [];
    const loop = (async () => {
      for await (const e of sink.watch({ signal: ac.signal })) {
        got.push(e.address!);
        if (got.length === 3) ac.abort();
      }
    })();
    for (let i = 0; i < 3; i++) sink.report(unassigned(i));
    await expect(loop).rejects.toMatchObject({ name: 'AbortError' });
    expect(got).toEqual([0, 1, 2]);
    expect(sink.listenerCount('guest-error')).toBe(0);
  });

  test('without listeners: the first of each kind in full, then one summary per interval with the count', () => {
    const t = clock();
    try {
      const lines: string[] = [];
      const sink = new GuestErrorSink({ log: (l) => lines.push(l), logIntervalMs: 1000 });
      sink.report(unassigned(0x10));
      sink.report(fdError); // another kind: logged in full too
      sink.report(unassigned(0x14));
      sink.report(unassigned(0x18));
      expect(lines).toEqual([
        'unassigned read at 0x10 [memory/unassigned, read-all-ones] (nothing there)',
        '0000:00:05.0: fd-error write [pci/fd-error, dropped]',
      ]);
      t.advance(1000);
      sink.report(unassigned(0x20));
      expect(lines[2]).toBe(
        'memory/unassigned: 3 more (4 in all), the last: unassigned read at 0x20 [memory/unassigned, read-all-ones]',
      );
      sink.report(unassigned(0x24));
      expect(lines).toHaveLength(3);
      // What is still owed is written by flush (a machine flushes when it closes), and only once.
      sink.flush();
      sink.flush();
      expect(lines.slice(3)).toEqual([
        'memory/unassigned: 1 more (5 in all), the last: unassigned read at 0x24 [memory/unassigned, read-all-ones]',
      ]);
    } finally {
      t.restore();
    }
  });

  test('logFirst: 0 only summarises; logIntervalMs: 0 logs every report', () => {
    const lines: string[] = [];
    const every = new GuestErrorSink({ log: (l) => lines.push(l), logIntervalMs: 0 });
    for (let i = 0; i < 3; i++) every.report(unassigned(i));
    expect(lines).toHaveLength(3);
    const t = clock();
    try {
      const quiet: string[] = [];
      const sink = new GuestErrorSink({ log: (l) => quiet.push(l), logFirst: 0, logIntervalMs: 1000 });
      sink.report(unassigned(0));
      sink.report(unassigned(1));
      expect(quiet).toEqual([expect.stringMatching(/^memory\/unassigned: 1 more \(1 in all\)/)]);
    } finally {
      t.restore();
    }
  });

  test('the default log is one line on stderr, never a process warning or a throw', () => {
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const sink = new GuestErrorSink();
      sink.report(fdError);
      sink.report(fdError);
      expect(err.mock.calls).toEqual([
        ['vfio-bridge: 0000:00:05.0: fd-error write [pci/fd-error, dropped]\n'],
      ]);
      expect(warn).not.toHaveBeenCalled();
    } finally {
      err.mockRestore();
      warn.mockRestore();
    }
  });

  test('bad options are typed errors', () => {
    expect(() => new GuestErrorSink({ log: 1 as never })).toThrow(TypeError);
    expect(() => new GuestErrorSink({ logFirst: -1 })).toThrow(RangeError);
    expect(() => new GuestErrorSink({ logFirst: 1.5 })).toThrow(RangeError);
    expect(() => new GuestErrorSink({ logIntervalMs: -1 })).toThrow(RangeError);
  });
});

describe('forwardGuestErrors', () => {
  test("the target's listeners hear the sink's reports; while it has none the sink logs", () => {
    const lines: string[] = [];
    const sink = new GuestErrorSink({ log: (l) => lines.push(l), logIntervalMs: 0 });
    const machine = new EventEmitter();
    forwardGuestErrors(machine, sink);
    expect(sink.listenerCount('guest-error')).toBe(0);
    const seen: GuestError[] = [];
    const fn = (e: GuestError): void => void seen.push(e);
    machine.on('guest-error', fn);
    sink.report(fdError);
    expect([seen, lines]).toEqual([[fdError], []]);
    machine.off('guest-error', fn);
    expect(sink.listenerCount('guest-error')).toBe(0);
    sink.report(fdError);
    expect(lines).toHaveLength(1);
  });
});
