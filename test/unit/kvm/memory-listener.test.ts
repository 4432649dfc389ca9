import {
  KvmMemoryListener,
  SlotTable,
  type MemorySlot,
  type SlotSpec,
  type SlotTarget,
} from '../../../lib/kvm';
import { MEMORY_HANDLE, type HostMemory } from '../../../lib/base/host-memory';
import { MemoryRegion } from '../../../lib/memory';
import { SystemAddressSpaces, VfioPciDevice } from '../../../lib/pci';
import { vfioPciSlotClassifier } from '../../../lib/vmm/slot-classifier';
import { DataViewMemory, type FakeDeviceSpec, FakeVfioDevice } from '../../support/fake-device';
import { enableDecode, ivshmemSpec, placeBar, rtl8139Spec } from '../../support/pci-helpers';

/** A fake KVM: real slot accounting, and a log of what reached "the kernel". */
/** Fake host memory: a handle method (never called: the fake VM does not reach the addon) and an address to log. */
function fakeHost<T extends object>(m: T, hostAddress: bigint): T & HostMemory & { hostAddress: bigint } {
  return Object.assign(m, { hostAddress, [MEMORY_HANDLE]: () => ({}) as never }) as never;
}

/** The fake host address a slot starts at. */
function host(s: MemorySlot): bigint {
  return (s.memory as unknown as { hostAddress: bigint }).hostAddress + BigInt(s.offset);
}

class FakeKvm implements SlotTarget {
  readonly table: SlotTable;
  readonly log: string[] = [];
  constructor(max = 32) {
    this.table = new SlotTable(max, 4096);
  }
  addSlot(spec: SlotSpec): MemorySlot {
    const s = this.table.reserve(spec);
    this.log.push(
      `add ${s.id} ${s.guestAddress.toString(16)}+${s.size.toString(16)} @${host(s).toString(16)}`,
    );
    return s;
  }
  removeSlot(slot: MemorySlot): void {
    this.log.push(`del ${slot.id} ${slot.guestAddress.toString(16)}`);
    this.table.release(slot);
  }
  /** [guest address, size, host address] of every slot, by guest address. */
  slots(): [number, number, bigint][] {
    return this.table.list().map((s) => [s.guestAddress, s.size, host(s)]);
  }
}

/** Gives every mapping a distinct page-aligned fake host address: region << 32 | offset. */
function withHostAddresses(spec: FakeDeviceSpec): FakeDeviceSpec {
  return {
    ...spec,
    mapper: (region, b, offset, length) => {
      const m = new DataViewMemory(
        new DataView(b.buffer, b.byteOffset + offset, length),
        null,
        region,
        offset,
      );
      return fakeHost(m, (BigInt(region + 1) << 32n) + BigInt(offset));
    },
  };
}

function setup(spec: FakeDeviceSpec, opts = {}, max = 32) {
  const bus = new SystemAddressSpaces();
  const dev = VfioPciDevice.open(bus, new FakeVfioDevice(withHostAddresses(spec)), opts);
  const kvm = new FakeKvm(max);
  const errors: unknown[] = [];
  const listener = new KvmMemoryListener(kvm, {
    guestErrors: bus.guestErrors,
    classify: vfioPciSlotClassifier,
  });
  bus.guestErrors.on('guest-error', (e) => {
    if (e.source === 'kvm') {
      expect(e).toMatchObject({ kind: 'slot-trapped', action: 'trapped' });
      errors.push(e.error);
    }
  });
  bus.memory.addMemoryListener(listener);
  return { bus, dev, kvm, listener, errors };
}

const HOST_BAR2 = 3n << 32n;

describe('KvmMemoryListener', () => {
  it('slots only the direct part of an ivshmem-as-RTL8168 BAR, never the quirk page', () => {
    const { dev, kvm } = setup(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    placeBar(dev, 2, 0xf0000000);
    placeBar(dev, 0, 0xf1000000);
    expect(kvm.slots()).toEqual([]);
    enableDecode(dev);
    // BAR 2: its first page holds the window quirk (emulated) and trapped-mmap pieces; the rest is
    // one direct slot at the matching host offset. BAR 0 (256 B at a page boundary) expands to a page.
    expect(kvm.slots()).toEqual([
      [0xf0001000, 0xff000, HOST_BAR2 + 0x1000n],
      [0xf1000000, 0x1000, 1n << 32n],
    ]);
  });

  it('moves the slot with the BAR, removing the old one first', () => {
    const { dev, kvm } = setup(ivshmemSpec());
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    expect(kvm.slots()).toContainEqual([0xf0000000, 0x100000, HOST_BAR2]);
    kvm.log.length = 0;
    placeBar(dev, 2, 0xe0000000);
    expect(kvm.slots()).toContainEqual([0xe0000000, 0x100000, HOST_BAR2]);
    expect(kvm.slots()).not.toContainEqual([0xf0000000, 0x100000, HOST_BAR2]);
    expect(kvm.log[0]).toMatch(/^del /);
  });

  it('drops every slot when memory decode goes off and restores them when it comes back', () => {
    const { dev, kvm } = setup(ivshmemSpec());
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    const before = kvm.slots();
    expect(before.length).toBeGreaterThan(0);
    dev.configWrite(0x04, 2, 0);
    expect(kvm.slots()).toEqual([]);
    enableDecode(dev);
    expect(kvm.slots()).toEqual(before);
  });

  it('drops the slots while the device is in D3hot and restores them in D0', () => {
    const { dev, kvm } = setup(ivshmemSpec());
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    const before = kvm.slots();
    dev.configWrite(0x44, 2, 3); // PMCSR of the fake's PM capability at 0x40: D3hot
    expect(dev.powerState).toBe(3);
    expect(kvm.slots()).toEqual([]);
    expect(dev.mapinfo()).toEqual([]);
    dev.configWrite(0x44, 2, 0);
    expect(kvm.slots()).toEqual(before);
  });

  it('never slots a sub-page BAR off page alignment, and slots it once expanded', () => {
    const { dev, kvm } = setup(rtl8139Spec());
    placeBar(dev, 1, 0xf0000800);
    enableDecode(dev);
    expect(
      dev
        .mapinfo()
        .filter((r) => r.bar === 1)
        .map((r) => r.mapinfo),
    ).toEqual(['trapped-mmap']);
    expect(kvm.slots()).toEqual([]);
    placeBar(dev, 1, 0xf0002000);
    expect(dev.bars[1]?.expanded).toBe(true);
    expect(kvm.slots()).toEqual([[0xf0002000, 0x1000, 2n << 32n]]);
  });

  it('slots guest RAM (a page-aligned ram-device with a host address) and skips unaligned ones', () => {
    const bus = new SystemAddressSpaces();
    const kvm = new FakeKvm();
    bus.memory.addMemoryListener(new KvmMemoryListener(kvm, { classify: vfioPciSlotClassifier }));
    const mem = (host: bigint, len: number) =>
      fakeHost(new DataViewMemory(new DataView(new ArrayBuffer(len))), host);
    const ram = MemoryRegion.ramDevice('ram', 0x4000, mem(0x7f0000000000n, 0x4000));
    const odd = MemoryRegion.ramDevice('odd', 0x800, mem(0x7f1000000000n, 0x800));
    bus.memory.root.addSubregion(ram, 0);
    bus.memory.root.addSubregion(odd, 0x10000);
    expect(kvm.slots()).toEqual([[0, 0x4000, 0x7f0000000000n]]);
  });

  it('reports slot exhaustion instead of throwing, leaving the range trapped', () => {
    const { dev, kvm, listener, errors } = setup(ivshmemSpec(), {}, 1);
    placeBar(dev, 0, 0xf1000000);
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    expect(kvm.slots()).toHaveLength(1);
    expect(listener.errorCount).toBe(1);
    expect(errors[0]).toMatchObject({ code: 'ENOSLOT' });
  });

  it('reports each trapped range once, however often the guest brings it back; a new range anew', () => {
    const { dev, kvm, listener, errors } = setup(ivshmemSpec(), {}, 1);
    placeBar(dev, 0, 0xf1000000);
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    dev.configWrite(0x04, 2, 0); // decode off and on twice: BAR 0 is refused each time
    enableDecode(dev);
    dev.configWrite(0x04, 2, 0);
    enableDecode(dev);
    expect([kvm.slots().length, listener.errorCount, errors.length]).toEqual([1, 3, 1]);
    expect(listener.guestErrors.count('kvm', 'slot-trapped')).toBe(1);
    placeBar(dev, 0, 0xe1000000); // somewhere else: another range, another report
    expect([listener.errorCount, errors.length]).toEqual([4, 2]);
    expect(listener.guestErrors.count('kvm', 'slot-trapped')).toBe(2);
  });

  it('without a sink, says so on its own log (first in full, then summaries), or not at all with log: null', () => {
    const run = (opts: { log: ((line: string) => void) | null; logIntervalMs?: number }) => {
      const bus = new SystemAddressSpaces();
      const dev = VfioPciDevice.open(bus, new FakeVfioDevice(withHostAddresses(ivshmemSpec())));
      const listener = new KvmMemoryListener(new FakeKvm(1), { classify: vfioPciSlotClassifier, ...opts });
      bus.memory.addMemoryListener(listener);
      placeBar(dev, 0, 0xf1000000);
      placeBar(dev, 2, 0xf0000000);
      enableDecode(dev);
      dev.configWrite(0x04, 2, 0); // decode off and on: the second BAR fails again
      enableDecode(dev);
      return listener.errorCount;
    };
    const lines: string[] = [];
    expect(run({ log: (l) => lines.push(l) })).toBe(2);
    expect(lines).toEqual([expect.stringMatching(/stays trapped: .*slot/)]);
    const warned = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      expect(run({ log: null })).toBe(2);
      expect(warned).not.toHaveBeenCalled();
    } finally {
      warned.mockRestore();
    }
  });

  it('removes every slot when the bus closes', () => {
    const { bus, dev, kvm } = setup(ivshmemSpec());
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    bus.close();
    expect(kvm.slots()).toEqual([]);
  });
});

/** A fake KVM that queues: changes wait in `kernel` until the test settles them, in order. */
class QueuedFakeKvm extends FakeKvm {
  readonly kernel: { line: string; slot: MemorySlot; settle(e?: Error): void }[] = [];
  override addSlot(): MemorySlot {
    throw new Error('a queued listener never adds synchronously');
  }
  override removeSlot(): void {
    throw new Error('a queued listener never removes synchronously');
  }
  queueSlotAdd(spec: SlotSpec): { slot: MemorySlot; done: Promise<void> } {
    const slot = this.table.reserve(spec);
    const done = new Promise<void>((resolve, reject) =>
      this.kernel.push({
        line: `add ${slot.guestAddress.toString(16)}`,
        slot,
        settle: (e) => {
          if (e === undefined) return resolve();
          this.table.release(slot);
          reject(e);
        },
      }),
    );
    return { slot, done };
  }
  queueSlotRemoval(slot: MemorySlot): Promise<void> {
    this.table.release(slot);
    return new Promise<void>((resolve) =>
      this.kernel.push({ line: `del ${slot.guestAddress.toString(16)}`, slot, settle: () => resolve() }),
    );
  }
}

describe('KvmMemoryListener with queued slot changes', () => {
  function queued(spec: FakeDeviceSpec) {
    const bus = new SystemAddressSpaces();
    const dev = VfioPciDevice.open(bus, new FakeVfioDevice(withHostAddresses(spec)));
    const kvm = new QueuedFakeKvm();
    const listener = new KvmMemoryListener(kvm, {
      guestErrors: bus.guestErrors,
      classify: vfioPciSlotClassifier,
      queue: true,
    });
    bus.memory.addMemoryListener(listener);
    return { bus, dev, kvm, listener };
  }

  it('needs a target that can queue', () => {
    const plain = { addSlot: () => ({}) as MemorySlot, removeSlot: () => undefined };
    expect(() => new KvmMemoryListener(plain, { queue: true })).toThrow(/queueSlotAdd/);
  });

  it('queues a move as the removal then the add, with the table updated at once', () => {
    const { dev, kvm } = queued(ivshmemSpec());
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    expect(kvm.kernel.map((k) => k.line)).toEqual(['add f0000000']);
    kvm.kernel.splice(0).forEach((k) => k.settle());
    placeBar(dev, 2, 0xe0000000);
    expect(kvm.kernel.map((k) => k.line)).toEqual(['del f0000000', 'add e0000000']);
    expect(kvm.slots()).toEqual([[0xe0000000, 0x100000, HOST_BAR2]]);
  });

  it('reports a slot KVM refused when the refusal comes, and no longer holds it', async () => {
    const { bus, dev, kvm, listener } = queued(ivshmemSpec());
    const reports: string[] = [];
    bus.guestErrors.on('guest-error', (e) => reports.push(`${e.source} ${e.kind} ${e.message}`));
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    kvm.kernel.splice(0).forEach((k) => k.settle(new Error('EEXIST: no')));
    await new Promise((r) => setImmediate(r));
    expect(listener.errorCount).toBe(1);
    expect(reports).toEqual([
      expect.stringMatching(/^kvm slot-trapped .*f0000000.* stays trapped: EEXIST: no/),
    ]);
    expect(kvm.slots()).toEqual([]);
    // Decode off: nothing of the refused slot is queued for removal.
    dev.configWrite(0x04, 2, 0);
    expect(kvm.kernel).toEqual([]);
  });
});

describe('SlotTable', () => {
  const mem = fakeHost({ length: 0x10000 }, 0x10000n);
  it('refuses unaligned, empty, overlapping and out-of-bounds slots with RangeErrors', () => {
    const t = new SlotTable(4, 4096);
    expect(() => t.reserve({ guestAddress: 0x800, size: 0x1000, memory: mem })).toThrow(RangeError);
    expect(() => t.reserve({ guestAddress: 0, size: 0, memory: mem })).toThrow(/at least one page/);
    expect(() => t.reserve({ guestAddress: 0, size: 0x20000, memory: mem })).toThrow(/exceeds the memory/);
    t.reserve({ guestAddress: 0, size: 0x2000, memory: mem, name: 'a' });
    expect(() => t.reserve({ guestAddress: 0x1000, size: 0x1000, memory: mem })).toThrow(
      /overlaps slot 0 \(a\)/,
    );
    expect(() => t.reserve({ guestAddress: 0x2000, size: 0x1000, memory: mem, offset: 0x800 })).toThrow(
      /not a multiple of the page size/,
    );
    expect(() =>
      t.reserve({
        guestAddress: 0x2000,
        size: 0x1000,
        memory: { hostAddress: 0x800n, length: 0x1000 } as never,
      }),
    ).toThrow(/must be a Mapping or GuestRam/);
  });
  it('reuses freed slot numbers and reports exhaustion as ENOSLOT', () => {
    const t = new SlotTable(2, 4096);
    const a = t.reserve({ guestAddress: 0, size: 0x1000, memory: mem });
    t.reserve({ guestAddress: 0x1000, size: 0x1000, memory: mem });
    expect(() => t.reserve({ guestAddress: 0x2000, size: 0x1000, memory: mem })).toThrow(
      expect.objectContaining({ code: 'ENOSLOT' }),
    );
    t.release(a);
    expect(t.reserve({ guestAddress: 0x2000, size: 0x1000, memory: mem }).id).toBe(a.id);
    expect(t.used).toBe(2);
  });
});
