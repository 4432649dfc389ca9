// IoOps: an io region's valid and impl rules, seen through guest accesses and on their own.
import { MemoryRegion } from '../../../lib';
import { IoOps } from '../../../lib/memory/io-ops';
import { closeAll, recordingIo, unassignedSpace as setup } from './helpers';

afterEach(closeAll);

describe('io: valid and impl', () => {
  test('defaults accept aligned 1, 2 and 4 byte accesses and pass them through', () => {
    const { as, root, events } = setup();
    const dev = recordingIo('dev', 0x100);
    root.addSubregion(dev.region, 0x100);
    as.write(0x104, 4, 0x12345678);
    expect(as.read(0x104, 2)).toBe(0x5678);
    expect(dev.log).toEqual(['w4@4=12345678', 'r2@4']);
    expect(events).toEqual([]);
  });

  test('pieces the device would not accept are unassigned: all-ones, dropped, reported', () => {
    const { as, root, events } = setup();
    const dev = recordingIo('dev', 0x100, { valid: { minAccessSize: 2, maxAccessSize: 4 } });
    root.addSubregion(dev.region, 0x100);
    expect(as.read(0x100, 1)).toBe(0xff);
    // Misaligned for a device that takes 2-byte accesses: cut into two 1-byte pieces, each refused.
    as.write(0x101, 2, 0x1234);
    expect(dev.log).toEqual([]);
    expect(events).toEqual([
      { addr: 0x100, size: 1, isWrite: false, reason: 'invalid-size', region: 'dev' },
      { addr: 0x101, size: 1, isWrite: true, reason: 'invalid-size', region: 'dev' },
      { addr: 0x102, size: 1, isWrite: true, reason: 'invalid-size', region: 'dev' },
    ]);
    expect(as.unassignedCount).toBe(3);
  });

  test('too wide or misaligned accesses are cut into aligned pieces the device takes, as address_space_rw', () => {
    const { as, root, events } = setup();
    const dev = recordingIo('dev', 0x100, { valid: { minAccessSize: 2, maxAccessSize: 4 } });
    dev.bytes.set([1, 2, 3, 4, 5, 6, 7, 8], 0);
    root.addSubregion(dev.region, 0x100);
    expect(as.read(0x100, 8)).toBe(0x0807060504030201n);
    expect(as.read(0x102, 4)).toBe(0x06050403);
    as.write(0x106, 4, 0xaabbccdd);
    expect(dev.log).toEqual(['r4@0', 'r4@4', 'r2@2', 'r2@4', 'w2@6=ccdd', 'w2@8=aabb']);
    expect(events).toEqual([]);
  });

  test('valid.accepts has the last word', () => {
    const { as, root, events } = setup();
    const dev = recordingIo('dev', 0x100, {
      valid: {
        maxAccessSize: 8,
        unaligned: true,
        accepts: (off, _size, isWrite) => !(isWrite && off >= 0x80),
      },
    });
    root.addSubregion(dev.region, 0);
    as.write(0x10, 4, 1);
    as.write(0x80, 4, 1);
    expect(as.read(0x80, 4)).toBe(0);
    expect(dev.log).toEqual(['w4@16=1', 'r4@128']);
    expect(events.map((e) => e.reason)).toEqual(['rejected']);
  });

  test('wider accesses are split into impl-sized ones, little-endian, lowest first', () => {
    const { as, root } = setup();
    const dev = recordingIo('dev', 0x100, { valid: { maxAccessSize: 8 }, impl: { maxAccessSize: 1 } });
    root.addSubregion(dev.region, 0);
    as.write(0x10, 4, 0x44332211);
    expect(dev.log).toEqual(['w1@16=11', 'w1@17=22', 'w1@18=33', 'w1@19=44']);
    dev.log.length = 0;
    expect(as.read(0x10, 4)).toBe(0x44332211);
    expect(dev.log).toEqual(['r1@16', 'r1@17', 'r1@18', 'r1@19']);
  });

  test('an 8-byte access to a 4-byte implementation is two 4-byte halves', () => {
    const { as, root } = setup();
    const dev = recordingIo('dev', 0x100, { valid: { maxAccessSize: 8 } });
    root.addSubregion(dev.region, 0);
    as.write(0x8, 8, 0x1122334455667788n);
    expect(dev.log).toEqual(['w4@8=55667788', 'w4@12=11223344']);
    dev.log.length = 0;
    expect(as.read(0x8, 8)).toBe(0x1122334455667788n);
    expect(dev.log).toEqual(['r4@8', 'r4@12']);
    const out = new Uint32Array(2);
    as.read64Pair(0x8, out);
    expect(Array.from(out)).toEqual([0x55667788, 0x11223344]);
    as.write64Pair(0x10, 1, 2);
    expect(as.read(0x10, 8)).toBe(0x200000001n);
  });

  test('narrower accesses are widened to impl.min and truncated, as QEMU does', () => {
    const { as, root } = setup();
    const dev = recordingIo('dev', 0x100, { impl: { minAccessSize: 4 } });
    root.addSubregion(dev.region, 0);
    dev.bytes.set([0x11, 0x22, 0x33, 0x44], 0x20);
    expect(as.read(0x20, 1)).toBe(0x11);
    as.write(0x24, 2, 0xabcd);
    expect(dev.log).toEqual(['r4@32', 'w4@36=abcd']);
  });

  test('read callbacks are masked to the access size and must return the right type', () => {
    const { as, root } = setup();
    root.addSubregion(MemoryRegion.io('wild', 0x10, { read: () => -1, write: () => undefined }), 0);
    expect(as.read(0, 2)).toBe(0xffff);
    root.addSubregion(
      MemoryRegion.io('broken', 0x10, {
        read: () => 'x' as never,
        write: () => undefined,
        valid: { maxAccessSize: 8 },
      }),
      0x100,
    );
    expect(() => as.read(0x100, 4)).toThrow(/returned string/);
    expect(() => as.read(0x100, 8)).toThrow(TypeError);
  });
});

describe('IoOps', () => {
  test('bad io constraints are refused', () => {
    const rw = { read: () => 0, write: () => undefined };
    expect(() => MemoryRegion.io('i', 4, { ...rw, valid: { minAccessSize: 3 as never } })).toThrow(
      RangeError,
    );
    expect(() => MemoryRegion.io('i', 4, { ...rw, valid: { minAccessSize: 4, maxAccessSize: 2 } })).toThrow(
      RangeError,
    );
    expect(() => MemoryRegion.io('i', 4, { ...rw, impl: { minAccessSize: 8, maxAccessSize: 1 } })).toThrow(
      RangeError,
    );
    expect(() => MemoryRegion.io('i', 4, { ...rw, impl: { unaligned: true } })).toThrow(RangeError);
  });

  test('the checks name the region and the rule', () => {
    const rw = { read: () => 0, write: () => undefined };
    expect(() => new IoOps('dev', null as never)).toThrow(/ops of region 'dev' must be an object/);
    expect(() => new IoOps('dev', { read: rw.read } as never)).toThrow(/read and write functions/);
    expect(() => new IoOps('dev', { ...rw, valid: { accepts: 1 as never } })).toThrow(
      /dev: valid.accepts must be a function/,
    );
    expect(() => new IoOps('dev', { ...rw, valid: { maxAccessSize: 16 as never } })).toThrow(
      /dev: valid.maxAccessSize 16 is invalid/,
    );
  });

  test('refusal gives the first rule an access breaks; needsSplit and widest follow valid', () => {
    const seen: string[] = [];
    const io = new IoOps('dev', {
      read: () => 0,
      write: () => undefined,
      valid: {
        minAccessSize: 2,
        maxAccessSize: 4,
        accepts: (o, s, w) => (seen.push(`${o}/${s}/${w}`), o !== 0x10),
      },
    });
    expect(io.widest).toBe(4);
    expect(io.refusal(0, 4, false)).toBeNull();
    expect(io.refusal(0x10, 4, true)).toBe('rejected');
    expect(io.refusal(2, 4, false)).toBe('unaligned');
    expect(io.refusal(0, 1, false)).toBe('invalid-size');
    expect(io.refusal(0, 8, false)).toBe('invalid-size');
    expect(seen).toEqual(['0/4/false', '16/4/true', '2/4/false', '0/1/false', '0/8/false']);
    expect(io.needsSplit(0, 4)).toBe(false);
    expect(io.needsSplit(0, 8)).toBe(true);
    expect(io.needsSplit(2, 4)).toBe(true);
    const loose = new IoOps('loose', { read: () => 0, write: () => undefined, valid: { unaligned: true } });
    expect(loose.needsSplit(3, 4)).toBe(false);
    expect(loose.refusal(3, 4, false)).toBeNull();
  });

  test('read and write adjust to impl and keep the callbacks as given', () => {
    const log: string[] = [];
    const ops = {
      read: (o: number, s: number) => (log.push(`r${s}@${o}`), s === 8 ? 0n : 0x1ff),
      write: (o: number, s: number, v: number | bigint) => void log.push(`w${s}@${o}=${v.toString(16)}`),
      valid: { maxAccessSize: 8 as const },
      impl: { minAccessSize: 2 as const, maxAccessSize: 2 as const },
    };
    const io = new IoOps('dev', ops);
    expect(io.ops).toBe(ops);
    expect(io.read(0, 1)).toBe(0xff);
    expect(io.read(4, 4)).toBe(0x01ff01ff);
    io.write(8, 4, 0xaabbccdd);
    expect(log).toEqual(['r2@0', 'r2@4', 'r2@6', 'w2@8=ccdd', 'w2@10=aabb']);
  });
});
