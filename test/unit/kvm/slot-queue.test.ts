// The queue of memory slot changes on a fake sender (the addon's batch call on a real VM is tested
// in the lab, test/hil/kvm/slot-queue.test.ts): what goes in one batch, that batches never overlap
// and keep their order, refusals, and that the queue is settled before the promises it resolves.
import { SlotQueue, type SlotOp } from '../../../lib/kvm/slot-queue';
import { SlotTable } from '../../../lib/kvm/slots';
import { MEMORY_HANDLE, type HostMemory } from '../../../lib/base/host-memory';

const PAGE = 4096;
const mem = { length: 16 * PAGE, [MEMORY_HANDLE]: () => 'handle' } as unknown as HostMemory;

/** A sender that keeps each batch until the test answers it. */
function fakeKvm() {
  const batches: { ops: readonly SlotOp[]; answer(r: (Error | undefined)[] | Error): void }[] = [];
  let closed = false;
  const send = (ops: readonly SlotOp[]) => {
    if (closed) return null;
    return new Promise<(Error | undefined)[]>((resolve, reject) =>
      batches.push({ ops, answer: (r) => (r instanceof Error ? reject(r) : resolve(r)) }),
    );
  };
  return { batches, send, close: () => (closed = true) };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const line = (op: SlotOp): string => `${op[3] === 0 ? 'del' : 'add'} ${op[0]} ${op[2].toString(16)}`;

describe('SlotQueue', () => {
  test('changes queued in one stretch go in one batch, in order; the table changes at once', async () => {
    const kvm = fakeKvm();
    const table = new SlotTable(8, PAGE);
    const q = new SlotQueue(kvm.send, table);
    expect(q.pending).toBeNull();
    const a = q.add({ guestAddress: 0x10000, size: PAGE, memory: mem });
    const removed = q.remove(a.slot);
    // The removed slot's number is free again: the next add may take it.
    const b = q.add({ guestAddress: 0x10000, size: PAGE, memory: mem });
    expect(b.slot.id).toBe(a.slot.id);
    expect(table.list()).toEqual([b.slot]);
    const pending = q.pending;
    expect(pending).not.toBeNull();
    await tick();
    expect(kvm.batches.map((x) => x.ops.map(line))).toEqual([['add 0 10000', 'del 0 10000', 'add 0 10000']]);
    kvm.batches[0].answer([undefined, undefined, undefined]);
    await expect(Promise.all([a.done, removed, b.done, pending])).resolves.toBeDefined();
    expect(q.pending).toBeNull();
  });

  test('a batch is sent only after the one before has settled', async () => {
    const kvm = fakeKvm();
    const q = new SlotQueue(kvm.send, new SlotTable(8, PAGE));
    const first = q.add({ guestAddress: 0, size: PAGE, memory: mem });
    await tick();
    const second = q.add({ guestAddress: PAGE, size: PAGE, memory: mem });
    const third = q.add({ guestAddress: 2 * PAGE, size: PAGE, memory: mem });
    await tick();
    expect(kvm.batches).toHaveLength(1);
    kvm.batches[0].answer([undefined]);
    await first.done;
    await tick();
    expect(kvm.batches.map((x) => x.ops.map(line))).toEqual([['add 0 0'], ['add 1 1000', 'add 2 2000']]);
    kvm.batches[1].answer([undefined, undefined]);
    await Promise.all([second.done, third.done]);
  });

  test('an add KVM refuses rejects alone and frees its slot; its removal is never sent', async () => {
    const kvm = fakeKvm();
    const table = new SlotTable(8, PAGE);
    const q = new SlotQueue(kvm.send, table);
    const kept = q.add({ guestAddress: 0, size: PAGE, memory: mem });
    const refused = q.add({ guestAddress: PAGE, size: PAGE, memory: mem });
    const sameBatch = q.remove(refused.slot);
    await tick();
    const no = new Error('EEXIST');
    kvm.batches[0].answer([undefined, no, new Error('EINVAL: no such slot')]);
    await expect(refused.done).rejects.toBe(no);
    await expect(kept.done).resolves.toBeUndefined();
    // Removed in the same batch as its refused add: KVM never had it, so no error.
    await expect(sameBatch).resolves.toBeUndefined();
    expect(table.list()).toEqual([kept.slot]);
  });

  test('a removal queued before the refusal came is dropped from the next batch', async () => {
    const kvm = fakeKvm();
    const table = new SlotTable(8, PAGE);
    const q = new SlotQueue(kvm.send, table);
    const a = q.add({ guestAddress: 0, size: PAGE, memory: mem });
    a.done.catch(() => undefined);
    await tick();
    const removal = q.remove(a.slot);
    const other = q.add({ guestAddress: PAGE, size: PAGE, memory: mem });
    kvm.batches[0].answer([new Error('refused')]);
    await expect(removal).resolves.toBeUndefined();
    await tick();
    expect(kvm.batches[1].ops.map(line)).toEqual(['add 0 1000']);
    kvm.batches[1].answer([undefined]);
    await other.done;
  });

  test('a batch that fails whole refuses each of its changes, and the queue goes on', async () => {
    const kvm = fakeKvm();
    const q = new SlotQueue(kvm.send, new SlotTable(8, PAGE));
    const a = q.add({ guestAddress: 0, size: PAGE, memory: mem });
    await tick();
    const b = q.add({ guestAddress: PAGE, size: PAGE, memory: mem });
    const boom = new Error('EMFILE: no fd for the batch');
    kvm.batches[0].answer(boom);
    await expect(a.done).rejects.toBe(boom);
    await tick();
    kvm.batches[1].answer([undefined]);
    await expect(b.done).resolves.toBeUndefined();
  });

  test('the queue is settled before the promises it resolves: an awaited add leaves nothing pending', async () => {
    const kvm = fakeKvm();
    const q = new SlotQueue(kvm.send, new SlotTable(8, PAGE));
    const a = q.add({ guestAddress: 0, size: PAGE, memory: mem });
    await tick();
    kvm.batches[0].answer([undefined]);
    await a.done;
    expect(q.pending).toBeNull();
  });

  test('once the VM is closed, unsent adds are refused with ECLOSED and removals resolve', async () => {
    const kvm = fakeKvm();
    const q = new SlotQueue(kvm.send, new SlotTable(8, PAGE));
    const a = q.add({ guestAddress: 0, size: PAGE, memory: mem });
    await tick();
    const b = q.add({ guestAddress: PAGE, size: PAGE, memory: mem });
    const gone = q.remove(a.slot);
    kvm.close();
    kvm.batches[0].answer([undefined]);
    await expect(a.done).resolves.toBeUndefined();
    await expect(b.done).rejects.toMatchObject({ code: 'ECLOSED' });
    await expect(gone).resolves.toBeUndefined();
    expect(q.pending).toBeNull();
  });

  test('bad specs throw at once and queue nothing', () => {
    const kvm = fakeKvm();
    const q = new SlotQueue(kvm.send, new SlotTable(8, PAGE));
    expect(() => q.add({ guestAddress: 5, size: PAGE, memory: mem })).toThrow(RangeError);
    expect(q.pending).toBeNull();
  });
});
