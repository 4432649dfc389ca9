// The exit table the vCPU threads serve from, held against the TypeScript flat view: on random
// views and random moves, every access the native table claims goes exactly where dispatch sends it
// (the same mapping byte, the same fd offset, the same value read), and every access it leaves to
// JavaScript is one it must (emulated regions, read-only writes, odd sizes, unaligned fd accesses,
// accesses that straddle ranges).
import * as fs from 'node:fs';
import fc from 'fast-check';
import {
  AddressSpace,
  ByteSink,
  DMA_HANDLE,
  ExitTable,
  Mapping,
  MemoryRegion,
  memfd,
  transaction,
  type AccessSize,
  type Device,
  type FlatRange,
} from '../../lib';
import { native, type NativeHandle } from '../../lib/native';
import { ExitTableListener } from '../../lib/vmm/exit-table-listener';
import { caught, until } from './helpers';

const FILE = 0x10000;
const PAGE = 4096;
const SPAN = 0x8000;

interface Setup {
  fd: number;
  mappings: Mapping[];
  device: Device;
  dispose(): void;
}

function setup(): Setup {
  const fd = memfd('exit-table', FILE);
  const bytes = Buffer.alloc(FILE);
  for (let i = 0; i < FILE; i++) bytes[i] = (i * 131 + (i >> 8)) & 0xff;
  fs.writeSync(fd, bytes, 0, FILE, 0);
  const mappings = [0, 1, 2].map((i) => Mapping.fromFd(fd, i * 4 * PAGE, 4 * PAGE));
  const handle = native.dupFd(fd) as NativeHandle;
  // What ExitTableListener uses of a Device: its fd handle and each region's offset in the fd.
  const device = {
    closed: false,
    _handle: handle,
    regionInfo: (bar: number) => ({ offset: bar * 0x4000 }),
  } as unknown as Device;
  return {
    fd,
    mappings,
    device,
    dispose() {
      for (const m of mappings) m.close();
      native.closeFd(handle);
      fs.closeSync(fd);
    },
  };
}

type Spec =
  | { kind: 'mmap'; map: number; offset: number; size: number; addr: number; prio: number; ro: boolean }
  | { kind: 'bar'; bar: number; size: number; addr: number; prio: number }
  | { kind: 'emulated'; size: number; addr: number; prio: number };

const specArb: fc.Arbitrary<Spec> = fc.oneof(
  fc.record({
    kind: fc.constant('mmap' as const),
    map: fc.integer({ min: 0, max: 2 }),
    offset: fc.integer({ min: 0, max: 2 * PAGE }),
    size: fc.integer({ min: 1, max: 2 * PAGE }),
    addr: fc.integer({ min: 0, max: SPAN - 1 }),
    prio: fc.integer({ min: 0, max: 3 }),
    ro: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('bar' as const),
    bar: fc.integer({ min: 0, max: 3 }),
    size: fc.integer({ min: 1, max: 0x4000 }),
    addr: fc.integer({ min: 0, max: SPAN - 1 }),
    prio: fc.integer({ min: 0, max: 3 }),
  }),
  fc.record({
    kind: fc.constant('emulated' as const),
    size: fc.integer({ min: 1, max: 0x800 }),
    addr: fc.integer({ min: 0, max: SPAN - 1 }),
    prio: fc.integer({ min: 0, max: 3 }),
  }),
);

function build(s: Setup, spec: Spec, i: number): MemoryRegion {
  if (spec.kind === 'mmap') {
    // An alias into a ram-device region over the whole mapping: ranges start at any offset in it.
    const mr = MemoryRegion.ramDevice(`m${i}`, 4 * PAGE, s.mappings[spec.map]);
    const a = MemoryRegion.alias(`a${i}`, mr, spec.offset, spec.size);
    a.setReadonly(spec.ro);
    return a;
  }
  if (spec.kind === 'bar') {
    const base = spec.bar * 0x4000;
    const mr = MemoryRegion.io(`bar${i}`, spec.size, {
      read: (o, sz) => {
        const b = Buffer.alloc(8);
        fs.readSync(s.fd, b, 0, sz, base + o);
        return sz === 8 ? b.readBigUInt64LE(0) : b.readUIntLE(0, sz);
      },
      write: () => undefined,
      valid: { minAccessSize: 1, maxAccessSize: 8, unaligned: false },
      impl: { minAccessSize: 1, maxAccessSize: 8, unaligned: false },
    });
    mr.tag = {
      owner: 'vfio-pci',
      bdf: 'dev',
      bar: spec.bar,
      role: 'bar',
      minAccess: 1,
      maxAccess: 8,
      barOffset: 0,
    };
    return mr;
  }
  return MemoryRegion.io(`e${i}`, spec.size, { read: () => 0x5a, write: () => undefined });
}

/** What a vCPU thread must do with the access, from the flat view alone. */
function expected(
  ranges: readonly FlatRange[],
  addr: number,
  size: number,
  isWrite: boolean,
): { kind: 'mmap' | 'fd'; at: bigint } | null {
  const r = ranges.find((x) => x.addr <= addr && addr + size <= x.addr + x.size);
  if (r === undefined || ![1, 2, 4, 8].includes(size)) return null;
  const delta = r.offsetInRegion + (addr - r.addr);
  if (r.kind === 'ram-device') {
    if (isWrite && r.readonly) return null;
    return { kind: 'mmap', at: (r.region.memory as Mapping).hostAddress + BigInt(delta) };
  }
  const tag = r.region.tag as { role?: string; bar: number } | undefined;
  if (r.kind !== 'io' || tag?.role !== 'bar' || r.readonly) return null;
  const at = tag.bar * 0x4000 + delta;
  return at % size === 0 ? { kind: 'fd', at: BigInt(at) } : null;
}

describe('ExitTable', () => {
  let s: Setup;
  beforeEach(() => (s = setup()));
  afterEach(() => s.dispose());

  test('on random views and moves, the native table routes as the flat view does', () => {
    fc.assert(
      fc.property(
        fc.array(specArb, { minLength: 1, maxLength: 8 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: SPAN - 1 })), { maxLength: 4 }),
        fc.array(
          fc.tuple(fc.integer({ min: 0, max: SPAN + 16 }), fc.constantFrom(1, 2, 3, 4, 8), fc.boolean()),
          { minLength: 40, maxLength: 40 },
        ),
        (specs, moves, probes) => {
          const root = MemoryRegion.container('root', 2 * SPAN);
          const as = new AddressSpace('t', root);
          using table = new ExitTable();
          const listener = new ExitTableListener(table, 'mmio', () => s.device);
          const off = as.addMemoryListener(listener);
          const regions = specs.map((sp, i) => build(s, sp, i));
          transaction(() => specs.forEach((sp, i) => root.addSubregion(regions[i], sp.addr, sp.prio)));
          const check = (): void => {
            const ranges = as.flatView.ranges;
            for (const [addr, size, isWrite] of probes) {
              const want = expected(ranges, addr, size, isWrite);
              expect(table.lookup('mmio', addr, size, isWrite)).toEqual(want);
              if (want === null || isWrite) continue;
              // The same bytes through dispatch and through where the table points.
              const viaTs = as.read(addr, size as AccessSize);
              const viaTable =
                want.kind === 'fd'
                  ? readFile(s.fd, Number(want.at), size)
                  : readMapped(s.mappings, want.at, size);
              expect(BigInt(viaTs)).toBe(viaTable);
              // And what a vCPU thread would answer, served here.
              expect(table.serve('mmio', addr, size, false)).toEqual({
                value: viaTable,
                fault: false,
                errno: 0,
              });
            }
          };
          check();
          for (const [which, to] of moves) {
            const i = which % regions.length;
            // A BAR move is one transaction: the table changes once, whole.
            transaction(() => {
              root.removeSubregion(regions[i]);
              root.addSubregion(regions[i], to, specs[i].prio);
            });
            check();
          }
          off();
          listener.clear();
          expect(table.counts).toEqual({ mmio: 0, pio: 0 });
          as.close();
        },
      ),
      { numRuns: 60 },
    );
  });

  test('bad entries are refused whole with typed errors, and a closed mapping is ECLOSED', () => {
    using table = new ExitTable();
    const m = s.mappings[0];
    const good = { start: 0, size: 16, kind: 'mmap' as const, mapping: mapHandle(m), offset: 0 };
    expect(() => table.set('mmio', [good, { ...good, start: 8 }])).toThrow(/overlaps/);
    expect(() => table.set('mmio', [{ ...good, offset: 4 * PAGE - 8 }])).toThrow(RangeError);
    expect(() => table.set('mmio', [{ ...good, size: 0 }])).toThrow(RangeError);
    expect(() => table.set('io' as never, [good])).toThrow(RangeError);
    expect(() => table.set('mmio', [{ ...good, mapping: {} as never }])).toThrow(TypeError);
    expect(table.lookup('mmio', 0, 4, false)).toBeNull();
    table.set('pio', [good]);
    expect(table.lookup('pio', 4, 4, false)).toEqual({ kind: 'mmap', at: m.hostAddress + 4n });
    const gone = Mapping.fromFd(s.fd, 0, PAGE);
    const h = mapHandle(gone);
    gone.close();
    expect(caught(() => table.set('mmio', [{ ...good, mapping: h }])).code).toBe('ECLOSED');
    table.close();
    expect(caught(() => table.lookup('mmio', 0, 4, false)).code).toBe('ECLOSED');
  });

  test('a mapping closed while the table holds it stays mapped for the table until it is replaced', () => {
    using table = new ExitTable();
    const m = Mapping.fromFd(s.fd, 0, PAGE);
    const at = m.hostAddress;
    table.set('mmio', [{ start: 0x1000, size: PAGE, kind: 'mmap', mapping: mapHandle(m), offset: 0 }]);
    m.close();
    // The pages are still the table's: the entry still resolves to them.
    expect(table.lookup('mmio', 0x1008, 8, false)).toEqual({ kind: 'mmap', at: at + 8n });
    table.set('mmio', []);
    expect(table.lookup('mmio', 0x1008, 8, false)).toBeNull();
  });
});

describe('ExitTable constants and byte sinks', () => {
  const LSR = 0x3fd;
  const THR = 0x3f8;

  test('a constant answers reads with its bytes and leaves writes to JavaScript', () => {
    using table = new ExitTable();
    table.set('pio', [
      { start: 0x10, size: 8, kind: 'const', value: 0x0605_0403_0201 },
      { start: LSR, size: 1, kind: 'const', value: 0x60 },
    ]);
    expect(table.serve('pio', LSR, 1, false)).toEqual({ value: 0x60n, fault: false, errno: 0 });
    expect(table.lookup('pio', LSR, 1, false)).toEqual({ kind: 'const', at: 0n });
    expect(table.serve('pio', LSR, 1, true, 0x11n)).toBeNull();
    expect(table.lookup('pio', LSR, 1, true)).toBeNull();
    expect(table.serve('pio', 0x11, 2, false)?.value).toBe(0x0302n);
    expect(table.serve('pio', 0x10, 8, false)?.value).toBe(0x0605_0403_0201n);
    expect(table.serve('pio', 0x17, 1, false)?.value).toBe(0n);
    expect(table.serve('pio', 0x17, 2, false)).toBeNull(); // straddles the end
    expect(() => table.set('pio', [{ start: 0, size: 9, kind: 'const', value: 0 }])).toThrow(RangeError);
    expect(() => table.set('pio', [{ start: 0, size: 1, kind: 'const', value: -1 }])).toThrow(RangeError);
    expect(() => table.set('pio', [{ start: 0, size: 1, kind: 'other' } as never])).toThrow(RangeError);
  });

  test('a sink takes byte writes in order, wakes the loop once until taken, and refuses when full or closed', async () => {
    let wakes = 0;
    const sink = new ByteSink(() => wakes++);
    using table = new ExitTable();
    table.set('pio', [{ start: THR, size: 1, kind: 'sink', sink }]);
    expect(table.lookup('pio', THR, 1, true)).toEqual({ kind: 'sink', at: 0n });
    for (const b of Buffer.from('hi\n')) expect(table.serve('pio', THR, 1, true, BigInt(b))).not.toBeNull();
    // Reads (the receiver behind the same port) and wider writes are JavaScript's.
    expect(table.serve('pio', THR, 1, false)).toBeNull();
    expect(table.serve('pio', THR, 2, true, 0x4141n)).toBeNull();
    await until(() => wakes > 0);
    expect(wakes).toBe(1);
    expect(Buffer.from(sink.take()!).toString()).toBe('hi\n');
    expect(sink.take()).toBeNull();
    table.serve('pio', THR, 1, true, 0x21n);
    await until(() => wakes > 1);
    expect(wakes).toBe(2);
    // Full: 64 KiB not taken. The next byte is refused (a vCPU thread would hand it over), and
    // taking makes room again.
    for (let i = 1; i < 64 * 1024; i++) table.serve('pio', THR, 1, true, BigInt(i & 0xff));
    expect(table.serve('pio', THR, 1, true, 0x7an)).toBeNull();
    const all = sink.take()!;
    expect(all.length).toBe(64 * 1024);
    expect([all[0], all[1], all[all.length - 1]]).toEqual([0x21, 1, 0xff]);
    expect(table.serve('pio', THR, 1, true, 0x7an)).not.toBeNull();
    // Closed: the bytes not taken are gone, and the table's entry refuses from then on.
    sink.close();
    expect(table.serve('pio', THR, 1, true, 0x7an)).toBeNull();
    expect(sink.take()).toBeNull();
    expect(caught(() => table.set('pio', [{ start: THR, size: 1, kind: 'sink', sink }])).code).toBe(
      'ECLOSED',
    );
    expect(() => new ByteSink(7 as never)).toThrow(TypeError);
  });
});

function mapHandle(m: Mapping): never {
  return m[DMA_HANDLE]() as never;
}

function readFile(fd: number, at: number, size: number): bigint {
  const b = Buffer.alloc(8);
  fs.readSync(fd, b, 0, size, at);
  return b.readBigUInt64LE(0);
}

function readMapped(mappings: Mapping[], at: bigint, size: number): bigint {
  for (const m of mappings) {
    const off = at - m.hostAddress;
    if (off >= 0n && off + BigInt(size) <= BigInt(m.length))
      return BigInt(m.read(Number(off), size as AccessSize));
  }
  throw new Error(`0x${at.toString(16)} is in no mapping`);
}
