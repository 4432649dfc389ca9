// vCPU threads on the lab's real (nested) KVM with a real vfio-pci BAR: a vCPU thread hammers
// ivshmem's shared memory (no KVM slot, so every read exits and is served on the thread from the
// exit table's mapping) while this thread moves the BAR away and back and toggles memory decode,
// each change one commit. While the BAR is away, the word the guest reads is changed to V2 through
// the BAR's new place: a read that returns V2 reached the BAR after the commit that moved it had
// returned, a stale access. Every read must be V1 or all-ones (decode off, the BAR away, or a
// revoked mapping: SIGBUS, reported), and nothing crashes. And a vCPU that triple-faults ends the
// run while another runs.
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  ExitTable,
  GuestErrorSink,
  MemoryRegion,
  SystemAddressSpaces,
  VcpuSet,
  VfioPciDevice,
  type GuestError,
  type VcpuOptions,
  type VcpuThreadFault,
} from '../../../lib';
import { ExitTableListener } from '../../../lib/vmm/exit-table-listener';
import { guestBinary, RESULTS } from '../../guest/guest';
import { CHECKPOINT_PORT, GuestMachine } from '../../guest/machine';
import { describeDevice, kvmFds, openDevice } from '../hil';
import { placeBar } from '../pci/lab';

const P = 0xe000_0000; // ivshmem BAR 2 (1 MiB) at home
const Q = 0xe010_0000; // and away: then A is unassigned
const A = P + 0x2000; // what the guest reads: BAR offset 0x2000 at P
const V1 = 0x1111_1111;
const V2 = 0x2222_2222;
const COUNT = 20_000;

describeDevice('ivshmem', 'vCPU threads against a BAR that moves under them', (bdf) => {
  test('a hammered BAR moved away and back and toggled never answers from where it was after the move', async () => {
    const opened = openDevice(bdf());
    const bus = new SystemAddressSpaces({ log: null });
    const dev = VfioPciDevice.open(bus, opened.device, { log: null });
    const m = new GuestMachine(bus, { irqchip: false, slots: false });
    const table = new ExitTable();
    const unlisten = bus.memory.addMemoryListener(
      new ExitTableListener(table, 'mmio', (b) => (b === opened.device.bdf ? opened.device : null)),
    );
    let done = false;
    bus.io.root.addSubregion(
      MemoryRegion.io('checkpoint', 1, { read: () => 0, write: (_o, _s, v) => void (done = v === 0xff) }),
      CHECKPOINT_PORT,
    );
    try {
      placeBar(dev, 2, P);
      dev.configWrite(0x04, 2, 0x0002);
      bus.memory.write(A, 4, V1);
      expect(table.lookup('mmio', A, 4, false)?.kind).toBe('mmap');

      m.load(guestBinary('hammer'));
      [A, COUNT, V1, V2].forEach((v, i) => m.param(i, v));
      const faults: VcpuThreadFault[] = [];
      const sink = new GuestErrorSink({ log: null });
      const set = new VcpuSet([m.vcpu], {
        routing: { memory: bus.memory, io: bus.io, stop: () => done },
        table,
        guestErrors: sink,
        onFault: (_id, f) => faults.push(f),
      });
      let running = true;
      const run = set.run({ timeoutMs: 100_000 }).finally(() => (running = false));
      let changes = 0;
      const steps = [
        () => dev.configWrite(0x04, 2, 0x0000), // decode off: the range leaves the flat view
        () => dev.configWrite(0x04, 2, 0x0002),
        () => {
          placeBar(dev, 2, Q); // a move: the table no longer holds A once this returns
          bus.memory.write(Q + 0x2000, 4, V2);
        },
        () => {
          bus.memory.write(Q + 0x2000, 4, V1);
          placeBar(dev, 2, P);
        },
      ];
      while (running) {
        steps[changes++ % steps.length]();
        await new Promise((r) => setImmediate(r));
      }
      const end = await run;
      const stats = set.stats;
      set.stop();
      expect(end).toEqual({ reason: 'stopped' });
      const [v1, v2, ones, other, last] = [0, 1, 2, 3, 4].map((i) => m.ram.read32(RESULTS + 4 * i));
      expect({ v2, other, last: last.toString(16) }).toEqual({ v2: 0, other: 0, last: '0' });
      expect(v1 + ones).toBe(COUNT);
      expect([v1 > 0, ones > 0]).toEqual([true, true]);
      expect(changes).toBeGreaterThan(8);
      // The BAR's reads were served on the vCPU thread; what faulted (a mapping vfio-pci revoked
      // while decode was off) read all-ones and was reported, never thrown.
      expect(stats.mmio).toBeGreaterThan(0);
      expect(faults.every((f) => f.code === 'SIGBUS' && f.space === 'mmio' && !f.isWrite)).toBe(true);
      // Each one a guest error on the set's sink too, with the fault as its detail.
      expect(sink.count('kvm', 'thread-access-failed')).toBe(faults.length);
      expect(sink.total).toBe(faults.length);
    } finally {
      unlisten();
      table.close();
      m.close();
      dev.close();
      bus.close();
      opened.close();
    }
  }, 120_000);
});

describe('vCPU threads: a triple fault', () => {
  test('one vCPU triple-faults while another runs: the run ends with its shutdown, both parked', async () => {
    const bus = new SystemAddressSpaces({ log: null });
    const m = new GuestMachine(bus, { irqchip: false });
    try {
      m.load(guestBinary('hammer'));
      // vCPU 0 reads guest RAM for ever (as far as this test goes); vCPU 1 runs ud2 with an empty
      // IDT: #UD, then #GP, then #DF cannot be delivered either: a triple fault.
      [0x7f00, 0x7fff_ffff, 1, 2].forEach((v, i) => m.param(i, v));
      const second = m.vm.createVcpu(1);
      const s = m.vcpu.getSregs();
      s.idt = { base: 0n, limit: 0 };
      second.setSregs(s);
      m.ram.write16(0x8000, 0x0b0f); // ud2
      const r = m.vcpu.getRegs();
      r.rip = 0x8000n;
      second.setRegs(r);
      const set = new VcpuSet([m.vcpu, second], { routing: { memory: bus.memory, io: bus.io } });
      try {
        const end = await set.run({ timeoutMs: 60_000 });
        expect(end).toEqual({ reason: 'guest-exit', vcpu: 1, exit: { kind: 'shutdown' } });
        expect(set.vcpus.map((v) => v.thread?.state)).toEqual(['parked', 'parked']);
      } finally {
        set.stop();
      }
    } finally {
      m.close();
      bus.close();
    }
  }, 90_000);
});

describe('vCPU threads: registers while parked', () => {
  test("a parked vCPU's registers and local APIC read and set (as a reset does); a running one's are refused", async () => {
    const bus = new SystemAddressSpaces({ log: null });
    const m = new GuestMachine(bus);
    try {
      m.load(guestBinary('hammer'));
      [0x7f00, 0x7fff_ffff, 1, 2].forEach((v, i) => m.param(i, v)); // reads guest RAM for ever
      const set = new VcpuSet([m.vcpu], { routing: { memory: bus.memory, io: bus.io } });
      try {
        expect(await set.run({ timeoutMs: 300 })).toEqual({ reason: 'timeout' });
        expect(m.vcpu.thread?.state).toBe('parked');
        const rip = m.vcpu.getRegs().rip;
        expect(rip).toBeGreaterThan(0n);
        expect(m.vcpu.getLapic().length).toBe(1024);
        await set.reset((v) => v.setRegs({ ...v.getRegs(), rbx: 0x1234n }));
        expect(m.vcpu.getRegs().rbx).toBe(0x1234n);
        // Resumed, the thread may be in KVM_RUN at once: the state is its, and asking is refused.
        const running = set.run({ timeoutMs: 300 });
        expect(m.vcpu.thread?.state).toBe('running');
        expect(() => m.vcpu.getRegs()).toThrow(/thread is running it \(pause it first\)/);
        expect(await running).toEqual({ reason: 'timeout' });
        expect(m.vcpu.getRegs().rip).toBeGreaterThan(0n);
      } finally {
        set.stop();
      }
    } finally {
      m.close();
      bus.close();
    }
  }, 60_000);
});

// Exits handed to JavaScript one after another (a guest writing its console a byte at a time does
// this) must not hold the event loop: the loop serves hand-offs for a bounded time per turn, then
// runs its timers. Each read here costs its handler 0.2 ms; a dispatcher that went on serving
// every exit that arrived while it ran (a thread-safe function does, up to a thousand) would serve
// hundreds between two ticks of a 1 ms timer. What the timer cannot tell apart is a turn that
// never came because the lab's one CPU ran something else: then no reads are served either.
describe('vCPU threads: hand-offs and the event loop', () => {
  test('a guest whose every access is handed to JavaScript leaves the loop its timers', async () => {
    const bus = new SystemAddressSpaces({ log: null });
    const m = new GuestMachine(bus, { irqchip: false });
    const A = 0xd000_0000;
    const SLOW_READS = 2000;
    let done = false;
    let reads = 0;
    bus.memory.root.addSubregion(
      MemoryRegion.io('slow', 0x1000, {
        read: () => {
          reads++;
          const until = performance.now() + 0.2;
          while (performance.now() < until);
          return V1;
        },
        write: () => undefined,
      }),
      A,
    );
    bus.io.root.addSubregion(
      MemoryRegion.io('checkpoint', 1, { read: () => 0, write: (_o, _s, v) => void (done = v === 0xff) }),
      CHECKPOINT_PORT,
    );
    let mostPerTick = 0;
    let readsAtTick = 0;
    const timer = setInterval(() => {
      mostPerTick = Math.max(mostPerTick, reads - readsAtTick);
      readsAtTick = reads;
    }, 1);
    try {
      m.load(guestBinary('hammer'));
      [A, SLOW_READS, V1, V2].forEach((v, i) => m.param(i, v));
      const set = new VcpuSet([m.vcpu], { routing: { memory: bus.memory, io: bus.io, stop: () => done } });
      try {
        const end = await set.run({ timeoutMs: 100_000 });
        expect(end).toEqual({ reason: 'stopped' });
        expect(set.stats.handoffs).toBeGreaterThanOrEqual(SLOW_READS);
      } finally {
        set.stop();
      }
      expect(reads).toBe(SLOW_READS);
      expect(m.ram.read32(RESULTS)).toBe(SLOW_READS);
      // A turn serves 1 ms of hand-offs (5 reads and the one under way), and a 1 ms timer fires
      // once a turn or more often: a few turns' worth between ticks at most.
      expect(mostPerTick).toBeLessThanOrEqual(25);
    } finally {
      clearInterval(timer);
      m.close();
      bus.close();
    }
  }, 120_000);
});

// A worker whose vCPU thread is waiting for its exit's answer when the worker is terminated: the
// environment's teardown stops and joins the thread and closes its queue; the process goes on and
// no KVM object is left.
describe('vCPU threads: a worker terminated while its vCPU hands off', () => {
  test('terminate() joins the thread and leaves nothing behind', async () => {
    expect(kvmFds()).toEqual([]);
    const root = path.resolve(__dirname, '../../..');
    const worker = new Worker(
      `
      require('@swc-node/register');
      const { parentPort, workerData } = require('node:worker_threads');
      const { MemoryRegion, SystemAddressSpaces, VcpuSet } = require(workerData.root + '/lib');
      const { GuestMachine } = require(workerData.root + '/test/guest/machine');
      const { guestBinary } = require(workerData.root + '/test/guest/guest');
      const bus = new SystemAddressSpaces({ log: null });
      const m = new GuestMachine(bus, { irqchip: false });
      m.load(guestBinary('hammer'));
      [0xd0000000, 0x7fffffff, 1, 2].forEach((v, i) => m.param(i, v));
      let told = false;
      bus.memory.root.addSubregion(
        MemoryRegion.io('slow', 0x1000, {
          read: () => {
            if (!told) parentPort.postMessage('handing off');
            told = true;
            return 1;
          },
          write: () => undefined,
        }),
        0xd0000000,
      );
      globalThis.kept = [bus, m, new VcpuSet([m.vcpu], { routing: { memory: bus.memory, io: bus.io } })];
      globalThis.kept[2].run({ timeoutMs: 100000 });
      `,
      { eval: true, workerData: { root } },
    );
    try {
      await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      expect(kvmFds().length).toBeGreaterThanOrEqual(2);
    } finally {
      await worker.terminate();
    }
    expect(kvmFds()).toEqual([]);
  }, 120_000);
});

// A bounded run on the caller's thread (Vcpu.runRouted) with no port I/O space: the guest's port
// write cannot be served; it is counted and reported to the vCPU's guest-error sink (a machine's,
// or its own with its own log), never thrown and never a process warning.
describe('Vcpu.runRouted: exits it cannot serve, on the guest-error channel', () => {
  const run = (vcpu: VcpuOptions): number => {
    const bus = new SystemAddressSpaces({ log: null });
    const m = new GuestMachine(bus, { irqchip: false, vcpu });
    try {
      m.load(Uint8Array.of(0xe6, 0x80, 0xe6, 0x80, 0xf4)); // out 0x80, al; out 0x80, al; hlt
      const r = m.vcpu.runRouted({ memory: bus.memory }, { budgetMs: 5000 });
      expect(r.reason).toBe('hlt');
      return m.vcpu.unservedExits;
    } finally {
      m.close();
      bus.close();
    }
  };

  test('each exit once on the sink given, with its fields', () => {
    const sink = new GuestErrorSink({ log: null });
    const seen: GuestError[] = [];
    sink.on('guest-error', (e) => seen.push(e));
    expect(run({ guestErrors: sink })).toBe(2);
    expect(seen).toEqual(
      [0, 1].map(() =>
        expect.objectContaining({
          source: 'kvm',
          kind: 'unserved-exit',
          where: 'pio',
          address: 0x80,
          action: 'read-all-ones',
          message: expect.stringMatching(/unserved port 0x80 \(count 1\): reads all-ones, writes dropped$/),
        }),
      ),
    );
  });

  test("without a sink: the vCPU's own logs the first in full; none, and no process warning, with log: null", () => {
    const lines: string[] = [];
    expect(run({ log: (l) => lines.push(l) })).toBe(2);
    expect(lines).toEqual([
      expect.stringMatching(/unserved port 0x80 \(count 1\): .*\[kvm\/unserved-exit, read-all-ones\]/),
    ]);
    const warned = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      expect(run({ log: null })).toBe(2);
      expect(warned).not.toHaveBeenCalled();
    } finally {
      warned.mockRestore();
    }
  });
});
