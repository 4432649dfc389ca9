import { AddressSpace, BufferMemory, MemoryRegion, type UnassignedAccess } from '../../../lib';
import { closeAll, recordingIo, unassignedSpace as setup } from './helpers';

afterEach(closeAll);

/** A FixedWidthMemory that records which width each access used. */
class TracingMemory extends BufferMemory {
  trace: string[] = [];
  override read8(o: number): number {
    this.trace.push(`r1@${o}`);
    return super.read8(o);
  }
  override read16(o: number): number {
    this.trace.push(`r2@${o}`);
    return super.read16(o);
  }
  override read32(o: number): number {
    this.trace.push(`r4@${o}`);
    return super.read32(o);
  }
  override read64(o: number): bigint {
    this.trace.push(`r8@${o}`);
    return super.read64(o);
  }
  override write8(o: number, v: number): void {
    this.trace.push(`w1@${o}`);
    super.write8(o, v);
  }
  override write16(o: number, v: number): void {
    this.trace.push(`w2@${o}`);
    super.write16(o, v);
  }
  override write32(o: number, v: number): void {
    this.trace.push(`w4@${o}`);
    super.write32(o, v);
  }
  override write64(o: number, v: bigint): void {
    this.trace.push(`w8@${o}`);
    super.write64(o, v);
  }
}

describe('ram', () => {
  test('reads and writes little-endian at any alignment, into the shared backing', () => {
    const { as, root } = setup();
    const buf = new ArrayBuffer(0x100);
    root.addSubregion(MemoryRegion.ram('ram', 0x100, buf), 0x1000);
    as.write(0x1001, 4, 0x11223344);
    expect(Array.from(new Uint8Array(buf, 1, 4))).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect(as.read(0x1001, 4)).toBe(0x11223344);
    expect(as.read(0x1001, 2)).toBe(0x3344);
    expect(as.read(0x1004, 1)).toBe(0x11);
    as.write(0x1008, 8, 0x0102030405060708n);
    expect(as.read(0x1008, 8)).toBe(0x0102030405060708n);
    expect(as.read(0x1008, 4)).toBe(0x05060708);
  });

  test('without a backing, zeroed memory appears on first access', () => {
    const { as, root } = setup();
    const r = MemoryRegion.ram('lazy', 0x10);
    root.addSubregion(r, 0);
    expect(as.read(4, 4)).toBe(0);
    as.write(4, 2, 0xbeef);
    expect(new DataView(r.backing as ArrayBuffer).getUint16(4, true)).toBe(0xbeef);
  });
});

describe('ram-device', () => {
  test('every aligned access is one fixed-width access of exactly that size', () => {
    const { as, root } = setup();
    const mem = new TracingMemory(0x100);
    root.addSubregion(MemoryRegion.ramDevice('bar', 0x100, mem), 0x2000);
    as.write(0x2010, 4, 0xdeadbeef);
    expect(as.read(0x2010, 4)).toBe(0xdeadbeef);
    as.write(0x2018, 8, 0x1122334455667788n);
    expect(as.read(0x2018, 8)).toBe(0x1122334455667788n);
    as.write(0x2002, 2, 0xabcd);
    expect(as.read(0x2003, 1)).toBe(0xab);
    expect(mem.trace).toEqual(['w4@16', 'r4@16', 'w8@24', 'r8@24', 'w2@2', 'r1@3']);
  });

  test('an unaligned access is still one access of exactly its size', () => {
    const { as, root } = setup();
    const mem = new TracingMemory(0x100);
    root.addSubregion(MemoryRegion.ramDevice('bar', 0x100, mem), 0);
    as.write(1, 4, 0x44332211);
    expect(as.read(1, 4)).toBe(0x44332211);
    as.write(3, 8, 0x8877665544332211n);
    expect(as.read(3, 8)).toBe(0x8877665544332211n);
    expect(as.read(5, 2)).toBe(0x4433);
    expect(mem.trace).toEqual(['w4@1', 'r4@1', 'w8@3', 'r8@3', 'r2@5']);
  });

  test('an access across two device ranges is cut at the boundary into aligned pieces', () => {
    const { as, root } = setup();
    const a = new TracingMemory(0x10);
    const b = new TracingMemory(0x10);
    root.addSubregion(MemoryRegion.ramDevice('a', 0x10, a), 0x00);
    root.addSubregion(MemoryRegion.ramDevice('b', 0x10, b), 0x10);
    as.write(0xd, 8, 0x8877665544332211n);
    expect(a.trace).toEqual(['w1@13', 'w2@14']);
    expect(b.trace).toEqual(['w4@0', 'w1@4']);
    expect(as.read(0xd, 8)).toBe(0x8877665544332211n);
  });

  test('a moved, disabled or read-only device range is never served from a stale lookup', () => {
    const { as, root, events } = setup();
    const mem = new BufferMemory(0x100);
    const bar = MemoryRegion.ramDevice('bar', 0x100, mem);
    root.addSubregion(bar, 0x1000);
    as.write(0x1000, 4, 0x11111111);
    expect(as.read(0x1000, 4)).toBe(0x11111111);
    bar.setOffset(0x2000);
    expect(as.read(0x1000, 4)).toBe(0xffffffff);
    as.write(0x1000, 4, 0x22222222);
    expect(mem.read32(0)).toBe(0x11111111);
    expect(as.read(0x2000, 4)).toBe(0x11111111);
    bar.setReadonly(true);
    as.write(0x2000, 4, 0x33333333);
    expect(mem.read32(0)).toBe(0x11111111);
    bar.setReadonly(false);
    as.write(0x2000, 4, 0x44444444);
    expect(mem.read32(0)).toBe(0x44444444);
    bar.setEnabled(false);
    expect(as.read(0x2000, 4)).toBe(0xffffffff);
    expect(events.map((e) => e.reason)).toEqual(['unassigned', 'unassigned', 'readonly', 'unassigned']);
  });

  test('read64Pair and write64Pair use the memory pair methods when it has them', () => {
    const { as, root } = setup();
    const mem = new BufferMemory(0x100);
    const calls: string[] = [];
    const paired = Object.assign(mem, {
      read64Pair(o: number, out: Uint32Array) {
        calls.push(`rp@${o}`);
        out[0] = mem.read32(o);
        out[1] = mem.read32(o + 4);
      },
      write64Pair(o: number, lo: number, hi: number) {
        calls.push(`wp@${o}`);
        mem.write32(o, lo);
        mem.write32(o + 4, hi);
      },
    });
    root.addSubregion(MemoryRegion.ramDevice('bar', 0x100, paired), 0x100);
    as.write64Pair(0x108, 0x55667788, 0x11223344);
    const out = new Uint32Array(2);
    as.read64Pair(0x108, out);
    expect(Array.from(out)).toEqual([0x55667788, 0x11223344]);
    expect(as.read(0x108, 8)).toBe(0x1122334455667788n);
    expect(calls).toEqual(['wp@8', 'rp@8']);
  });
});

/** Device memory that faults while `revoked`, as a vfio-pci BAR mapping does after a reset. */
class RevocableMemory extends BufferMemory {
  revoked = false;
  readonly faults: Error[] = [];
  #check(): void {
    if (!this.revoked) return;
    const e = Object.assign(new Error('bus error'), { code: 'SIGBUS' });
    this.faults.push(e);
    throw e;
  }
  override read8(o: number): number {
    this.#check();
    return super.read8(o);
  }
  override read16(o: number): number {
    this.#check();
    return super.read16(o);
  }
  override read32(o: number): number {
    this.#check();
    return super.read32(o);
  }
  override read64(o: number): bigint {
    this.#check();
    return super.read64(o);
  }
  override write8(o: number, v: number): void {
    this.#check();
    super.write8(o, v);
  }
  override write16(o: number, v: number): void {
    this.#check();
    super.write16(o, v);
  }
  override write32(o: number, v: number): void {
    this.#check();
    super.write32(o, v);
  }
  override write64(o: number, v: bigint): void {
    this.#check();
    super.write64(o, v);
  }
  read64Pair(o: number, out: Uint32Array): void {
    this.#check();
    out[0] = super.read32(o);
    out[1] = super.read32(o + 4);
  }
  write64Pair(o: number, lo: number, hi: number): void {
    this.#check();
    super.write32(o, lo);
    super.write32(o + 4, hi);
  }
}

describe('ram-device faults', () => {
  function revocable(): {
    as: AddressSpace;
    events: UnassignedAccess[];
    a: RevocableMemory;
    b: RevocableMemory;
  } {
    const { as, root, events } = setup();
    const a = new RevocableMemory(0x100);
    const b = new RevocableMemory(0x100);
    root.addSubregion(MemoryRegion.ramDevice('bar-a', 0x100, a), 0x1000);
    root.addSubregion(MemoryRegion.ramDevice('bar-b', 0x100, b), 0x1100);
    a.write32(0x10, 0x12345678);
    return { as, events, a, b };
  }

  test('a faulting access never throws: reads are all-ones, writes are dropped, each is reported', () => {
    const { as, events, a } = revocable();
    expect(as.read(0x1010, 4)).toBe(0x12345678); // primes the last-hit fast path
    a.revoked = true;
    expect(as.read(0x1010, 4)).toBe(0xffffffff); // fast path
    expect(as.read(0x1011, 1)).toBe(0xff);
    expect(as.read(0x1012, 2)).toBe(0xffff);
    expect(as.read(0x1018, 8)).toBe(0xffffffffffffffffn);
    as.write(0x1010, 4, 0xdeadbeef); // fast path
    as.write(0x1010, 8, 1n);
    expect(a.faults).toHaveLength(6);
    expect(events.map((e) => [e.addr, e.size, e.isWrite, e.reason, e.region])).toEqual([
      [0x1010, 4, false, 'fault', 'bar-a'],
      [0x1011, 1, false, 'fault', 'bar-a'],
      [0x1012, 2, false, 'fault', 'bar-a'],
      [0x1018, 8, false, 'fault', 'bar-a'],
      [0x1010, 4, true, 'fault', 'bar-a'],
      [0x1010, 8, true, 'fault', 'bar-a'],
    ]);
    expect(events.map((e) => e.error)).toEqual(a.faults);
    expect(as.unassignedCount).toBe(6);
    a.revoked = false;
    expect(as.read(0x1010, 4)).toBe(0x12345678); // nothing was written while revoked
  });

  test('the first access to a range, a split access and the pair paths are covered too', () => {
    const { as, events, a, b } = revocable();
    a.revoked = true;
    b.revoked = true;
    expect(as.read(0x1020, 4)).toBe(0xffffffff); // no last hit yet: the full lookup path
    as.write(0x1024, 2, 0xabcd);
    expect(as.read(0x10fe, 4)).toBe(0xffffffff); // crosses bar-a into bar-b: two pieces
    as.write(0x10fe, 4, 0x01020304);
    const out = new Uint32Array([1, 2]);
    as.read64Pair(0x1040, out);
    expect(Array.from(out)).toEqual([0xffffffff, 0xffffffff]);
    as.write64Pair(0x1040, 5, 6);
    expect(events.map((e) => [e.addr, e.size, e.isWrite, e.reason, e.region])).toEqual([
      [0x1020, 4, false, 'fault', 'bar-a'],
      [0x1024, 2, true, 'fault', 'bar-a'],
      [0x10fe, 2, false, 'fault', 'bar-a'],
      [0x1100, 2, false, 'fault', 'bar-b'],
      [0x10fe, 2, true, 'fault', 'bar-a'],
      [0x1100, 2, true, 'fault', 'bar-b'],
      [0x1040, 8, false, 'fault', 'bar-a'],
      [0x1040, 8, true, 'fault', 'bar-a'],
    ]);
    expect(a.faults.length + b.faults.length).toBe(8);
  });

  test('caller errors are still thrown, not reported as faults', () => {
    const { as, events, a } = revocable();
    a.revoked = true;
    expect(() => as.read(-1, 4)).toThrow(RangeError);
    expect(() => as.write(0x1010, 4, 2 ** 32)).toThrow(RangeError);
    expect(() => as.read(0x1010, 9 as never)).toThrow(RangeError);
    expect(events).toEqual([]);
  });
});

describe('dispatch', () => {
  test('unassigned reads are all-ones, writes are dropped, both are counted and reported', () => {
    const { as, events } = setup();
    expect(as.read(0x10, 1)).toBe(0xff);
    expect(as.read(0x10, 2)).toBe(0xffff);
    expect(as.read(0x10, 4)).toBe(0xffffffff);
    expect(as.read(0x10, 8)).toBe(0xffffffffffffffffn);
    as.write(0x10, 4, 5);
    expect(as.unassignedCount).toBe(5);
    expect(events[4]).toEqual({ addr: 0x10, size: 4, isWrite: true, reason: 'unassigned' });
    // Far beyond the root: still only unassigned.
    expect(as.read(2 ** 53 - 1, 1)).toBe(0xff);
  });

  test('writes to read-only ranges are dropped and reported', () => {
    const { as, root, events } = setup();
    const buf = new ArrayBuffer(0x10);
    const rom = MemoryRegion.ram('rom', 0x10, buf);
    rom.setReadonly(true);
    root.addSubregion(rom, 0);
    new Uint8Array(buf)[0] = 7;
    as.write(0, 1, 9);
    expect(as.read(0, 1)).toBe(7);
    expect(events).toEqual([{ addr: 0, size: 1, isWrite: true, reason: 'readonly', region: 'rom' }]);
    const mem = new BufferMemory(0x10);
    const bar = MemoryRegion.ramDevice('bar', 0x10, mem);
    bar.setReadonly(true);
    root.addSubregion(bar, 0x100);
    as.write(0x100, 4, 1);
    as.write64Pair(0x100, 1, 1);
    expect(mem.read32(0)).toBe(0);
    const dev = recordingIo('dev', 0x10);
    dev.region.setReadonly(true);
    root.addSubregion(dev.region, 0x200);
    as.write(0x200, 4, 1);
    expect(dev.log).toEqual([]);
  });

  test('an access across a range boundary is split per range, deterministically', () => {
    const { as, root, events } = setup();
    const a = new ArrayBuffer(0x10);
    const dev = recordingIo('dev', 0x10, { valid: { maxAccessSize: 8, unaligned: true } });
    root.addSubregion(MemoryRegion.ram('a', 0x10, a), 0x0);
    root.addSubregion(dev.region, 0x10);
    new Uint8Array(a).set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    dev.bytes.set([0x21, 0x22, 0x23, 0x24]);
    expect(as.read(0xe, 4)).toBe(0x2221100f);
    expect(as.read(0xd, 8)).toBe(0x0024232221100f0en);
    expect(dev.log).toEqual(['r2@0', 'r4@0', 'r1@4']);
    dev.log.length = 0;
    as.write(0xf, 2, 0xaabb);
    expect(new Uint8Array(a)[15]).toBe(0xbb);
    expect(dev.log).toEqual(['w1@0=aa']);
    // Partly unassigned: the gap reads as ones and is reported with its own extent.
    expect(as.read(0x1e, 4)).toBe(0xffff0000 + (dev.bytes[0xf] << 8) + dev.bytes[0xe]);
    expect(events).toEqual([{ addr: 0x20, size: 2, isWrite: false, reason: 'unassigned' }]);
  });

  test('bad arguments from the caller are RangeErrors and TypeErrors', () => {
    const { as } = setup();
    expect(() => as.read(-1, 4)).toThrow(RangeError);
    expect(() => as.read(0.5, 4)).toThrow(RangeError);
    expect(() => as.read(NaN, 4)).toThrow(RangeError);
    expect(() => as.read(2 ** 53, 4)).toThrow(RangeError);
    expect(() => as.read(0, 9 as never)).toThrow(/access size 9/);
    expect(() => as.write(0, 0 as never, 0)).toThrow(RangeError);
    expect(() => as.write(0, 4, 2 ** 32)).toThrow(RangeError);
    expect(() => as.write(0, 4, -1)).toThrow(RangeError);
    expect(() => as.write(0, 1, 256)).toThrow(/does not fit in 1 bytes/);
    expect(() => as.write(0, 8, 1)).toThrow(TypeError);
    expect(() => as.write(0, 8, 2n ** 64n)).toThrow(RangeError);
    expect(() => as.write(0, 2, 1n)).toThrow(TypeError);
    expect(() => as.read('0' as never, 4)).toThrow(TypeError);
    expect(() => as.read64Pair(0, new Uint32Array(1))).toThrow(TypeError);
    expect(() => as.write64Pair(0, 2 ** 32, 0)).toThrow(RangeError);
    expect(() => new AddressSpace('x', {} as MemoryRegion)).toThrow(TypeError);
    expect(as.unassignedCount).toBe(0);
  });

  test('a device callback may remap memory during an access', () => {
    const { as, root } = setup();
    const bar = MemoryRegion.ram('bar', 0x10);
    root.addSubregion(bar, 0x100);
    root.addSubregion(
      MemoryRegion.io('ctl', 4, { read: () => 0, write: (_o, _s, v) => bar.setOffset(v as number) }),
      0,
    );
    as.write(0x100, 4, 0xaa);
    as.write(0, 4, 0x200);
    expect(as.read(0x200, 4)).toBe(0xaa);
    expect(as.read(0x100, 4)).toBe(0xffffffff);
  });
});
