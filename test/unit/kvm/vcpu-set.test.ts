// VcpuSet's run loop on fake vCPU threads: how a run ends (guest exit, KVM error, routing.stop,
// interrupt, stop, timeout, abort, a throwing device model), that every thread is parked before
// run() resolves, and that exits handed over reach the routing one at a time with their answers.
import type { Vcpu } from '../../../lib/kvm/vcpu';
import type { AccessExit } from '../../../lib/kvm/exit';
import type { VcpuThread, VcpuThreadHandlers } from '../../../lib/kvm/vcpu-thread';
import { VcpuSet } from '../../../lib/kvm/vcpu-set';
import { GuestErrorSink, type GuestError } from '../../../lib/base/guest-error';
import { AddressSpace, MemoryRegion } from '../../../lib/memory';

class FakeThread {
  state: 'running' | 'pausing' | 'parked' | 'stopped' = 'running';
  readonly log: string[];
  constructor(
    readonly handlers: VcpuThreadHandlers,
    log: string[],
    readonly id: number,
  ) {
    this.log = log;
  }
  /** Hands `e` over as the real thread does: through onAccess, as plain values. */
  exit(e: AccessExit): ReturnType<NonNullable<VcpuThreadHandlers['onAccess']>> {
    const mmio = e.kind === 'mmio';
    return this.handlers.onAccess!(
      mmio,
      mmio ? e.address : e.port,
      e.size,
      e.isWrite,
      mmio ? 1 : e.count,
      e.size === 8 ? e.data : Number(e.data),
    );
  }
  get stats() {
    return { mmio: 1, pio: 2, handoffs: 0, faults: 0, runs: 3 };
  }
  pause(): Promise<void> {
    if (this.state === 'running') this.state = 'pausing';
    this.log.push(`pause ${this.id}`);
    return Promise.resolve().then(() => {
      if (this.state === 'pausing') this.state = 'parked';
    });
  }
  resume(): void {
    this.log.push(`resume ${this.id}`);
    this.state = 'running';
  }
  stop(): void {
    this.log.push(`stop ${this.id}`);
    this.state = 'stopped';
  }
  ref(): void {}
  unref(): void {}
}

function fakes(n: number): { vcpus: Vcpu[]; threads: FakeThread[]; log: string[] } {
  const log: string[] = [];
  const threads: FakeThread[] = [];
  const vcpus = Array.from({ length: n }, (_, id) => ({
    id,
    startThread(handlers: VcpuThreadHandlers, opts: { name?: string }) {
      log.push(`start ${id} ${opts.name}`);
      const t = new FakeThread(handlers, log, id);
      threads.push(t);
      return t as unknown as VcpuThread;
    },
  })) as unknown as Vcpu[];
  return { vcpus, threads, log };
}

function space(): { memory: AddressSpace; values: number[] } {
  const values: number[] = [];
  const memory = new AddressSpace('test', MemoryRegion.container('root', 0x10000));
  memory.root.addSubregion(
    MemoryRegion.io('reg', 8, { read: (o) => 0x40 + o, write: (_o, _s, v) => void values.push(Number(v)) }),
    0x1000,
  );
  return { memory, values };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('VcpuSet', () => {
  test('starts one named thread per vCPU, serves handed-over exits, and ends at a guest exit with all parked', async () => {
    const { vcpus, threads, log } = fakes(2);
    const { memory, values } = space();
    const set = new VcpuSet(vcpus, { routing: { memory }, name: 'cpu' });
    const run = set.run();
    await tick();
    expect(log).toEqual(['start 0 cpu 0', 'start 1 cpu 1']);
    expect(threads[0].exit({ kind: 'mmio', address: 0x1004, size: 4, isWrite: false, data: 0n })).toBe(0x44);
    expect(
      threads[1].exit({ kind: 'mmio', address: 0x1000, size: 1, isWrite: true, data: 0x99n }),
    ).toBeUndefined();
    expect(values).toEqual([0x99]);
    threads[1].handlers.onParked?.('guest-exit', { exit: { kind: 'shutdown' } });
    expect(await run).toEqual({ reason: 'guest-exit', vcpu: 1, exit: { kind: 'shutdown' } });
    expect(threads.map((t) => t.state)).toEqual(['parked', 'parked']);
    expect(set.stats).toEqual({ mmio: 2, pio: 4, handoffs: 0, faults: 0, runs: 6 });
    expect(set.running).toBe(false);
  });

  test('the threads get onAccess, the plain-values form, and no onExit', async () => {
    const { vcpus, threads } = fakes(1);
    const { memory, values } = space();
    const io = new AddressSpace('io', MemoryRegion.container('io-root', 0x10000));
    io.root.addSubregion(
      MemoryRegion.io('port', 4, {
        read: (o) => 0x70 + o,
        write: (_o, _s, v) => void values.push(Number(v)),
      }),
      0x60,
    );
    const set = new VcpuSet(vcpus, { routing: { memory, io } });
    const run = set.run();
    const h = threads[0].handlers;
    expect(h.onAccess?.(true, 0x1004, 4, false, 1, 0)).toBe(0x44);
    expect(h.onAccess?.(true, 0x1000, 1, true, 1, 0x99)).toBeUndefined();
    expect(h.onAccess?.(false, 0x62, 1, false, 1, 0)).toBe(0x72);
    expect(h.onAccess?.(false, 0x60, 2, true, 1, 0x1234)).toBeUndefined();
    // Only onAccess: no exit object is made for the set.
    expect(h.onExit).toBeUndefined();
    expect(values).toEqual([0x99, 0x1234]);
    set.stop();
    expect(await run).toEqual({ reason: 'stopped' });
  });

  test('a second run resumes the threads it parked', async () => {
    const { vcpus, threads, log } = fakes(1);
    const set = new VcpuSet(vcpus, { routing: space() });
    const first = set.run();
    set.interrupt();
    expect(await first).toEqual({ reason: 'interrupted' });
    const second = set.run();
    expect(log.filter((l) => l.startsWith('resume'))).toEqual(['resume 0']);
    expect(threads[0].state).toBe('running');
    set.stop();
    expect(await second).toEqual({ reason: 'stopped' });
    expect(threads[0].state).toBe('stopped');
  });

  test('a KVM_RUN error ends the run with the error; a paused park does not end it', async () => {
    const { vcpus, threads } = fakes(2);
    const set = new VcpuSet(vcpus, { routing: space() });
    const run = set.run();
    threads[0].handlers.onParked?.('paused', {});
    const error = new Error('KVM_RUN failed');
    threads[1].handlers.onParked?.('error', { error });
    expect(await run).toEqual({ reason: 'error', vcpu: 1, error });
  });

  test('pending work an exit started holds that exit answer until it settles; none answers at once', async () => {
    const { vcpus, threads } = fakes(1);
    const { memory } = space();
    let release: (() => void) | null = null;
    let pending: Promise<void> | null = null;
    const set = new VcpuSet(vcpus, { routing: { memory }, pending: () => pending });
    const run = set.run();
    const read = { kind: 'mmio', address: 0x1004, size: 4, isWrite: false, data: 0n } as const;
    expect(threads[0].exit(read)).toBe(0x44);
    pending = new Promise<void>((r) => (release = r));
    const answer = threads[0].exit(read);
    expect(answer).toBeInstanceOf(Promise);
    let value: unknown = 'not yet';
    void (answer as Promise<unknown>).then((v) => (value = v));
    await tick();
    expect(value).toBe('not yet');
    release!();
    await tick();
    expect(value).toBe(0x44);
    set.stop();
    expect(await run).toEqual({ reason: 'stopped' });
  });

  test('routing.stop() ends the run after the access that made it true', async () => {
    const { vcpus, threads } = fakes(1);
    let done = false;
    const { memory } = space();
    const set = new VcpuSet(vcpus, {
      routing: { memory, stop: () => done, onAccess: () => (done = true) },
    });
    const run = set.run();
    threads[0].exit({ kind: 'mmio', address: 0x1000, size: 4, isWrite: true, data: 1n });
    expect(await run).toEqual({ reason: 'stopped' });
  });

  test('a device model that throws ends the run with its error; the read gets no value', async () => {
    const { vcpus, threads } = fakes(1);
    const memory = new AddressSpace('t', MemoryRegion.container('root', 0x10000));
    const boom = new Error('model bug');
    memory.root.addSubregion(
      MemoryRegion.io('bad', 4, {
        read: () => {
          throw boom;
        },
        write: () => undefined,
      }),
      0,
    );
    const set = new VcpuSet(vcpus, { routing: { memory } });
    const run = set.run();
    expect(threads[0].exit({ kind: 'mmio', address: 0, size: 4, isWrite: false, data: 0n })).toBeUndefined();
    expect(await run).toEqual({ reason: 'error', vcpu: 0, error: boom });
  });

  test('string port I/O and ports with no io space are counted, read all-ones and never thrown', async () => {
    const { vcpus, threads } = fakes(1);
    const set = new VcpuSet(vcpus, { routing: space() });
    const run = set.run();
    const t = threads[0];
    expect(t.exit({ kind: 'io', port: 0x60, size: 1, isWrite: false, count: 1, data: 0n })).toBe(0xff);
    expect(t.exit({ kind: 'io', port: 0x60, size: 2, isWrite: true, count: 4, data: 0n })).toBeUndefined();
    expect(set.unservedExits).toBe(2);
    set.stop();
    await run;
  });

  test('the timeout ends the run; an abort rejects with the reason, threads parked', async () => {
    const { vcpus, threads } = fakes(1);
    const set = new VcpuSet(vcpus, { routing: space() });
    expect(await set.run({ timeoutMs: 5 })).toEqual({ reason: 'timeout' });
    const ac = new AbortController();
    const run = set.run({ signal: ac.signal });
    ac.abort(new Error('enough'));
    await expect(run).rejects.toThrow('enough');
    expect(threads[0].state).toBe('parked');
    await expect(set.run({ signal: AbortSignal.abort(new Error('already')) })).rejects.toThrow('already');
  });

  test('stop() from inside a handler ends the run with stopped and joins every thread', async () => {
    const { vcpus, threads } = fakes(2);
    const memory = new AddressSpace('t', MemoryRegion.container('root', 0x10000));
    const set = new VcpuSet(vcpus, { routing: { memory } });
    memory.root.addSubregion(MemoryRegion.io('close', 1, { read: () => 0, write: () => set.stop() }), 0);
    const run = set.run();
    threads[0].exit({ kind: 'mmio', address: 0, size: 1, isWrite: true, data: 1n });
    expect(await run).toEqual({ reason: 'stopped' });
    expect(threads.map((t) => t.state)).toEqual(['stopped', 'stopped']);
    expect(await set.run()).toEqual({ reason: 'stopped' });
  });

  test('reset parks every thread, runs the function on each vCPU, and lets the run go on', async () => {
    const { vcpus, threads, log } = fakes(2);
    const set = new VcpuSet(vcpus, { routing: space() });
    const run = set.run();
    const seen: number[] = [];
    await set.reset((v) => {
      expect(threads.every((t) => t.state === 'parked')).toBe(true);
      seen.push(v.id);
    });
    expect(seen).toEqual([0, 1]);
    expect(threads.map((t) => t.state)).toEqual(['running', 'running']);
    expect(log.filter((l) => l.startsWith('resume'))).toEqual(['resume 0', 'resume 1']);
    set.stop();
    await run;
  });

  test('refuses a second concurrent run and bad options', async () => {
    const { vcpus } = fakes(1);
    const set = new VcpuSet(vcpus, { routing: space() });
    const run = set.run();
    await expect(set.run()).rejects.toThrow(RangeError);
    await expect(new VcpuSet(vcpus, { routing: space() }).run({ timeoutMs: 0 })).rejects.toThrow(RangeError);
    expect(() => new VcpuSet([], { routing: space() })).toThrow(RangeError);
    expect(() => new VcpuSet(vcpus, {} as never)).toThrow(TypeError);
    set.stop();
    await run;
  });

  test("a thread's failed access is a guest error on the sink given, or on the set's own; onFault alone keeps them", async () => {
    const sigbus = {
      space: 'mmio',
      address: 0xe0001000,
      size: 4,
      isWrite: false,
      code: 'SIGBUS',
      errno: 0,
    } as const;
    const eio = { space: 'pio', address: 0xc010, size: 2, isWrite: true, code: 'EIO', errno: 5 } as const;
    const runWith = async (opts: object): Promise<void> => {
      const { vcpus, threads } = fakes(2);
      const set = new VcpuSet(vcpus, { routing: space(), ...opts });
      const run = set.run();
      await tick();
      threads[1].handlers.onFault!(sigbus);
      threads[0].handlers.onFault!(eio);
      set.stop();
      await run;
    };
    const sink = new GuestErrorSink({ log: null });
    const seen: GuestError[] = [];
    sink.on('guest-error', (e) => seen.push(e));
    const called: number[] = [];
    await runWith({ guestErrors: sink, onFault: (id: number) => called.push(id) });
    expect(seen).toEqual([
      {
        source: 'kvm',
        kind: 'thread-access-failed',
        where: 'mmio',
        address: 0xe0001000,
        width: 4,
        write: false,
        action: 'read-all-ones',
        message: 'vCPU 1: mmio read at 0xe0001000 size 4 failed (SIGBUS)',
        hint: expect.stringMatching(/revoked/),
        detail: { vcpu: 1, ...sigbus },
      },
      expect.objectContaining({
        where: 'pio',
        write: true,
        action: 'dropped',
        hint: 'the device fd refused it',
      }),
    ]);
    // The deprecated callback still hears each one, beside the sink.
    expect(called).toEqual([1, 0]);
    // Without a sink: the set's own logs them (the first in full).
    const lines: string[] = [];
    await runWith({ log: (l: string) => lines.push(l) });
    expect(lines).toEqual([
      expect.stringMatching(/^vCPU 1: mmio read .* \(SIGBUS\) \[kvm\/thread-access-failed, read-all-ones\]/),
    ]);
    // onFault alone: the caller takes them, and nothing is logged.
    const owned: number[] = [];
    const quiet = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await runWith({ onFault: (id: number) => owned.push(id) });
      expect(quiet).not.toHaveBeenCalled();
    } finally {
      quiet.mockRestore();
    }
    expect(owned).toEqual([1, 0]);
    const { vcpus } = fakes(1);
    expect(() => new VcpuSet(vcpus, { routing: space(), guestErrors: {} as never })).toThrow(TypeError);
    expect(() => new VcpuSet(vcpus, { routing: space(), onFault: 1 as never })).toThrow(TypeError);
  });
});
