import { decodeCpuid, encodeCpuid, type CpuidEntry } from '../../../lib';
import { encodeFpu, encodeMsrs, FPU_SIZE } from '../../../lib/kvm/x86';
import { pcLapic } from '../../../lib';

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
