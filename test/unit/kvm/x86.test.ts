import { decodeCpuid, encodeCpuid, type CpuidEntry } from '../../../lib';
import { encodeFpu, encodeMsrs, FPU_SIZE } from '../../../lib/kvm/x86';
import { pcLapic } from '../../../lib';
import { decodeSregs, encodeSregs, SREGS_SIZE, type Sregs } from '../../../lib/kvm/uapi';

describe('x86 state tables', () => {
  test('kvm_cpuid2 round-trips, with signed register values taken as their 32 bits', () => {
    const e: CpuidEntry = { function: 1, index: 0, flags: 1, eax: 1, ebx: 2, ecx: -1, edx: 0xffffffff };
    const b = encodeCpuid([e, { ...e, function: 7 }]);
    expect(b.length).toBe(8 + 2 * 40);
    expect(b.readUInt32LE(0)).toBe(2);
    expect(decodeCpuid(b)).toEqual([
      { ...e, ecx: 0xffffffff },
      { ...e, function: 7, ecx: 0xffffffff },
    ]);
    expect(() => encodeCpuid([{ ...e, eax: 2 ** 32 }])).toThrow(RangeError);
    expect(() => encodeCpuid([{ ...e, function: -1 }])).toThrow(RangeError);
    expect(() => decodeCpuid(Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]))).toThrow(/truncated/);
  });

  test('kvm_cpuid2 decodes from a Buffer that is a window of a larger one, at any offset', () => {
    const e: CpuidEntry = { function: 0xd, index: 1, flags: 1, eax: 3, ebx: 4, ecx: 5, edx: 6 };
    const inner = encodeCpuid([e]);
    const outer = Buffer.alloc(inner.length + 3);
    inner.copy(outer, 3);
    expect(decodeCpuid(outer.subarray(3))).toEqual([e]);
    expect(() => decodeCpuid(Buffer.alloc(4))).toThrow(/no header/);
  });

  test('kvm_sregs round-trips every field at the kernel offsets; bad values are refused, not wrapped', () => {
    const seg = (i: number) => ({
      base: 0x1_0000_0000n * BigInt(i) + 0x1000n,
      limit: 0xfffff + i,
      selector: 8 * i,
      type: i % 16,
      present: 1,
      dpl: i % 4,
      db: 1,
      s: 1,
      l: 0,
      g: 1,
      avl: 0,
      unusable: i === 7 ? 1 : 0,
    });
    const s: Sregs = {
      cs: seg(0),
      ds: seg(1),
      es: seg(2),
      fs: seg(3),
      gs: seg(4),
      ss: seg(5),
      tr: seg(6),
      ldt: seg(7),
      gdt: { base: 0x5000n, limit: 23 },
      idt: { base: 0xffff_ffff_ffff_f000n, limit: 0xfff },
      cr0: 0x8000_0011n,
      cr2: 2n,
      cr3: 0x1000n,
      cr4: 0x20n,
      cr8: 0n,
      efer: 0x500n,
      apicBase: 0xfee0_0900n,
      interruptBitmap: [1n, 0n, 0n, 1n << 63n],
    };
    const b = encodeSregs(s);
    expect(b.length).toBe(SREGS_SIZE);
    expect(b.readBigUInt64LE(24)).toBe(0x1_0000_1000n); // ds.base
    expect(b.readUInt16LE(24 + 12)).toBe(8); // ds.selector
    expect(b.readBigUInt64LE(8 * 24 + 16)).toBe(0xffff_ffff_ffff_f000n); // idt.base
    expect(b.readBigUInt64LE(8 * 24 + 32)).toBe(0x8000_0011n); // cr0
    expect(b.readBigUInt64LE(SREGS_SIZE - 8)).toBe(1n << 63n);
    expect(decodeSregs(b)).toEqual(s);
    const window = Buffer.alloc(SREGS_SIZE + 5);
    b.copy(window, 5);
    expect(decodeSregs(window.subarray(5))).toEqual(s);
    expect(() => encodeSregs({ ...s, cr3: -1n })).toThrow(/cr3 -1 is not a u64/);
    expect(() => encodeSregs({ ...s, cr4: 1 << 5 } as never)).toThrow(/cr4 must be a bigint/);
    expect(() => encodeSregs({ ...s, cs: { ...s.cs, selector: 0x10000 } })).toThrow(/cs.selector 65536/);
    expect(() => encodeSregs({ ...s, gdt: { ...s.gdt, base: 1n << 64n } })).toThrow(/gdt.base/);
    expect(() => decodeSregs(Buffer.alloc(SREGS_SIZE - 1))).toThrow(/truncated/);
  });

  test('kvm_msrs and kvm_fpu put each value where the kernel reads it', () => {
    const m = encodeMsrs([
      { index: 0x1a0, value: 1n },
      { index: 0xc0000080, value: -1n },
    ]);
    expect(m.length).toBe(8 + 2 * 16);
    expect(m.readUInt32LE(8 + 16)).toBe(0xc0000080);
    expect(m.readBigUInt64LE(8 + 16 + 8)).toBe(0xffffffffffffffffn);
    expect(() => encodeMsrs([{ index: 1, value: 1 as never }])).toThrow(TypeError);
    const f = encodeFpu(0x37f, 0x1f80);
    expect(f.length).toBe(FPU_SIZE);
    expect(f.readUInt16LE(128)).toBe(0x37f);
    expect(f.readUInt32LE(408)).toBe(0x1f80);
  });

  test("pcLapic wires LINT0 to ExtINT and LINT1 to NMI, keeping each LVT's mask", () => {
    const page = Buffer.alloc(1024);
    page.writeUInt32LE(0x10000, 0x350);
    page.writeUInt32LE(0x10000, 0x360);
    const out = pcLapic(page);
    expect(out.readUInt32LE(0x350)).toBe(0x10700);
    expect(out.readUInt32LE(0x360)).toBe(0x10400);
    expect(page.readUInt32LE(0x350)).toBe(0x10000);
  });
});
