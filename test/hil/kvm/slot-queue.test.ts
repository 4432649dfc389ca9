// Memory slot changes queued for KVM (given to it on the thread pool, in order) on the lab's real
// (nested) KVM: what the guest reads after they settle is what they made, a change refused before
// KVM saw it is refused alone, a vCPU whose exit answer is a promise waits for it while the event
// loop runs, and a BAR moved under a vCPU that reads it through a KVM slot is never read where it
// was once the move's slot changes have settled.
import * as fs from 'node:fs';
import { Mapping, memfd, MemoryRegion, SystemAddressSpaces, VcpuSet, VfioPciDevice } from '../../../lib';
import { guestBinary, RAM_SIZE, RESULTS } from '../../guest/guest';
import { CHECKPOINT_PORT, GuestMachine } from '../../guest/machine';
import { placeBar } from '../pci/lab';
import { caught, describeDevice, describeKvm, openDevice } from '../hil';

const PAGE = 4096;
const GPA = RAM_SIZE + 0x10_0000; // above the test guest's RAM
const V1 = 0x1111_1111;
const V2 = 0x2222_2222;

/** A memfd mapping of `pages` pages whose first word is `word`. */
function memory(name: string, word: number, pages = 1): Mapping {
  const fd = memfd(name, pages * PAGE);
  try {
    const m = Mapping.fromFd(fd, 0, pages * PAGE);
    m.write32(0, word);
    return m;
  } finally {
    fs.closeSync(fd);
  }
}

/** Run the hammer guest: `count` reads of `addr`; the counts of V1, V2, all-ones and others. */
async function hammer(m: GuestMachine, bus: SystemAddressSpaces, addr: number, count: number) {
  let done = false;
  const port = MemoryRegion.io('checkpoint', 1, {
    read: () => 0,
    write: (_o, _s, v) => void (done = v === 0xff),
  });
  bus.io.root.addSubregion(port, CHECKPOINT_PORT);
  try {
    m.load(guestBinary('hammer'));
    [addr, count, V1, V2].forEach((v, i) => m.param(i, v));
    const set = new VcpuSet([m.vcpu], { routing: { memory: bus.memory, io: bus.io, stop: () => done } });
    try {
      expect(await set.run({ timeoutMs: 60_000 })).toEqual({ reason: 'stopped' });
    } finally {
      set.stop();
    }
    const [v1, v2, ones, other] = [0, 1, 2, 3].map((i) => m.ram.read32(RESULTS + 4 * i));
    return { v1, v2, ones, other };
  } finally {
    bus.io.root.removeSubregion(port);
  }
}

describeKvm('queued slot changes on real KVM', () => {
  let bus: SystemAddressSpaces;
  let m: GuestMachine;
  beforeEach(() => {
    bus = new SystemAddressSpaces({ log: null });
    m = new GuestMachine(bus, { irqchip: false });
  });
  afterEach(() => {
    m.close();
    bus.close();
  });

  test('a removal and an add at the same address in one stretch reach KVM in order', async () => {
    const a = memory('slot-a', V1);
    const b = memory('slot-b', V2);
    try {
      const first = m.vm.queueSlotAdd({ guestAddress: GPA, size: PAGE, memory: a, name: 'a' });
      expect(m.vm.slotChanges).not.toBeNull();
      await first.done;
      expect(await hammer(m, bus, GPA, 50)).toEqual({ v1: 50, v2: 0, ones: 0, other: 0 });
      // The table is updated as each change is queued: the add may reuse the removed slot's number.
      const removed = m.vm.queueSlotRemoval(first.slot);
      const second = m.vm.queueSlotAdd({ guestAddress: GPA, size: PAGE, memory: b, name: 'b' });
      expect(m.vm.slots.list().map((s) => s.name)).toEqual(['guest RAM', 'b']);
      await Promise.all([removed, second.done, m.vm.slotChanges]);
      expect(m.vm.slotChanges).toBeNull();
      expect(await hammer(m, bus, GPA, 50)).toEqual({ v1: 0, v2: 50, ones: 0, other: 0 });
    } finally {
      a.close();
      b.close();
    }
  }, 60_000);

  test('while changes are queued, a synchronous one is refused with EBUSY; after, it is taken', async () => {
    const a = memory('slot-a', V1);
    try {
      const { slot, done } = m.vm.queueSlotAdd({ guestAddress: GPA, size: PAGE, memory: a });
      expect(caught(() => m.vm.removeSlot(slot))).toMatchObject({
        code: 'EBUSY',
        hint: expect.stringMatching(/await vm\.slotChanges/),
      });
      await done;
      m.vm.removeSlot(slot);
      expect(m.vm.slots.used).toBe(1);
    } finally {
      a.close();
    }
  });

  test('a memory closed before its queued add was sent refuses that add alone', async () => {
    const a = memory('slot-a', V1);
    const gone = memory('slot-gone', V2);
    try {
      const kept = m.vm.queueSlotAdd({ guestAddress: GPA, size: PAGE, memory: a, name: 'kept' });
      const lost = m.vm.queueSlotAdd({ guestAddress: GPA + PAGE, size: PAGE, memory: gone, name: 'lost' });
      gone.close(); // in the same stretch: the batch has not been sent yet
      await kept.done;
      await expect(lost.done).rejects.toMatchObject({ code: 'ECLOSED' });
      expect(m.vm.slots.list().map((s) => s.name)).toEqual(['guest RAM', 'kept']);
      // Its removal is not sent to KVM (which never had it), and is not an error.
      await expect(m.vm.queueSlotRemoval(lost.slot)).resolves.toBeUndefined();
      expect(await hammer(m, bus, GPA, 20)).toEqual({ v1: 20, v2: 0, ones: 0, other: 0 });
    } finally {
      a.close();
    }
  }, 60_000);

  test('a change not yet sent when the VM closes is refused; one on its way still settles', async () => {
    const a = memory('slot-a', V1);
    try {
      const sent = m.vm.queueSlotAdd({ guestAddress: GPA, size: PAGE, memory: a });
      await Promise.resolve(); // the batch is sent in a microtask
      const unsent = m.vm.queueSlotAdd({ guestAddress: GPA + PAGE, size: PAGE, memory: a });
      const refused = expect(unsent.done).rejects.toMatchObject({ code: 'ECLOSED' });
      await m.vm.closeAsync();
      await expect(sent.done).resolves.toBeUndefined();
      await refused;
      expect(m.vm.slotChanges).toBeNull();
      expect(caught(() => m.vm.queueSlotAdd({ guestAddress: GPA, size: PAGE, memory: a }))).toMatchObject({
        code: 'ECLOSED',
      });
    } finally {
      a.close();
    }
  });

  test('an exit answered by a promise holds its vCPU, not the event loop, and its value arrives', async () => {
    const A = 0x4000_0000;
    let reads = 0;
    let waiting = false;
    let waitedAt = 0;
    let arrivedWhileWaiting = 0;
    let ticks = 0;
    bus.memory.root.addSubregion(
      MemoryRegion.io('answers', PAGE, {
        read: () => {
          if (waiting) arrivedWhileWaiting++;
          reads++;
          return V1;
        },
        write: () => undefined,
      }),
      A,
    );
    const timer = setInterval(() => ticks++, 1);
    let done = false;
    bus.io.root.addSubregion(
      MemoryRegion.io('checkpoint', 1, { read: () => 0, write: (_o, _s, v) => void (done = v === 0xff) }),
      CHECKPOINT_PORT,
    );
    m.load(guestBinary('hammer'));
    [A, 200, V1, V2].forEach((v, i) => m.param(i, v));
    const ticksWhileWaiting: number[] = [];
    const set = new VcpuSet([m.vcpu], {
      routing: { memory: bus.memory, io: bus.io, stop: () => done },
      // Every 50th read's answer waits 20 ms for a timer.
      pending: () => {
        if (reads % 50 !== 0 || reads === waitedAt) return null;
        waitedAt = reads;
        waiting = true;
        const before = ticks;
        return new Promise<void>((resolve) =>
          setTimeout(() => {
            ticksWhileWaiting.push(ticks - before);
            waiting = false;
            resolve();
          }, 20),
        );
      },
    });
    try {
      expect(await set.run({ timeoutMs: 60_000 })).toEqual({ reason: 'stopped' });
    } finally {
      set.stop();
      clearInterval(timer);
    }
    const [v1, v2, ones, other] = [0, 1, 2, 3].map((i) => m.ram.read32(RESULTS + 4 * i));
    expect({ v1, v2, ones, other }).toEqual({ v1: 200, v2: 0, ones: 0, other: 0 });
    expect(reads).toBe(200);
    expect(arrivedWhileWaiting).toBe(0);
    expect(ticksWhileWaiting).toHaveLength(4);
    // The loop ran its timers while the vCPU waited.
    expect(Math.min(...ticksWhileWaiting)).toBeGreaterThan(0);
  }, 60_000);

  test('a bad pending option is refused', () => {
    expect(
      () =>
        new VcpuSet([m.vcpu], {
          routing: { memory: bus.memory },
          pending: 5 as unknown as () => null,
        }),
    ).toThrow(/pending must be a function/);
  });
});

const P = 0xe000_0000; // ivshmem BAR 2 (1 MiB) at home
const Q = 0xe010_0000; // and away
const A = P + 0x2000;

describeDevice('ivshmem', 'a BAR moved under a vCPU reading it through a queued KVM slot', (bdf) => {
  test('once a move has settled, the guest never reads the BAR where it was', async () => {
    const opened = openDevice(bdf());
    const bus = new SystemAddressSpaces({ log: null });
    const dev = VfioPciDevice.open(bus, opened.device, { log: null });
    const m = new GuestMachine(bus, { irqchip: false, queueSlots: true });
    let done = false;
    bus.io.root.addSubregion(
      MemoryRegion.io('checkpoint', 1, { read: () => 0, write: (_o, _s, v) => void (done = v === 0xff) }),
      CHECKPOINT_PORT,
    );
    try {
      placeBar(dev, 2, P);
      dev.configWrite(0x04, 2, 0x0002);
      bus.memory.write(A, 4, V1);
      await m.vm.slotChanges;
      expect(m.vm.slots.list().map((s) => s.guestAddress)).toContain(P);
      m.load(guestBinary('hammer'));
      [A, 0x7fff_ffff, V1, V2].forEach((v, i) => m.param(i, v));
      const set = new VcpuSet([m.vcpu], {
        routing: { memory: bus.memory, io: bus.io, stop: () => done },
        pending: () => m.vm.slotChanges,
      });
      let moves = 0;
      const run = set.run({ timeoutMs: 100_000 });
      // Away and back, each move queued and settled; V2 is written at the BAR's new place only
      // once KVM no longer maps it at P: a V2 read at A is a slot KVM kept after its removal.
      for (; moves < 20; moves++) {
        placeBar(dev, 2, Q);
        await m.vm.slotChanges;
        bus.memory.write(Q + 0x2000, 4, V2);
        await new Promise((r) => setTimeout(r, 5));
        bus.memory.write(Q + 0x2000, 4, V1);
        placeBar(dev, 2, P);
        await m.vm.slotChanges;
        await new Promise((r) => setTimeout(r, 5));
      }
      done = true; // the next exit (a read while the BAR is away) ends the run
      placeBar(dev, 2, Q);
      const end = await run;
      set.stop();
      expect(end).toEqual({ reason: 'stopped' });
      const [v1, v2, ones, other] = [0, 1, 2, 3].map((i) => m.ram.read32(RESULTS + 4 * i));
      expect({ v2, other }).toEqual({ v2: 0, other: 0 });
      // The guest read the BAR through its slot (V1) and the hole while it was away (all-ones).
      expect([v1 > 0, ones > 0]).toEqual([true, true]);
      expect(m.listener.errorCount).toBe(0);
    } finally {
      m.close();
      dev.close();
      bus.close();
      opened.close();
    }
  }, 120_000);
});
