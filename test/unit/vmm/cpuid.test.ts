import { guestCpuid, type CpuidEntry } from '../../../lib';

const leaf = (fn: number, regs: Partial<CpuidEntry> = {}, index = 0): CpuidEntry => ({
  function: fn,
  index,
  flags: 0,
  eax: 0,
  ebx: 0,
  ecx: 0,
  edx: 0,
  ...regs,
});

const AVX = 1 << 28;

describe('guestCpuid', () => {
  const supported = [
    leaf(0, { eax: 0xd }),
    leaf(1, { ebx: 0xff_08_0800, ecx: AVX, edx: 1 << 28 }),
    leaf(0xb, { edx: 7 }, 0),
    leaf(0xb, { edx: 7 }, 1),
    leaf(0x8000001e, { eax: 9 }),
    leaf(0x40000000, { eax: 0x40000001 }),
  ];

  test('gives each vCPU its APIC ID and the package its vCPU count, and says "hypervisor"', () => {
    const t = guestCpuid(supported, { apicId: 2, cpus: 4 });
    const l1 = t.find((e) => e.function === 1)!;
    expect(l1.ebx >>> 24).toBe(2);
    expect((l1.ebx >>> 16) & 0xff).toBe(4);
    expect(l1.ebx & 0xffff).toBe(0x0800); // CLFLUSH size and brand index kept
    expect(l1.ecx >>> 31).toBe(1);
    expect((l1.edx >>> 28) & 1).toBe(1); // HTT with more than one
    expect(t.filter((e) => e.function === 0xb).map((e) => e.edx)).toEqual([2, 2]);
    expect(t.find((e) => e.function === 0x8000001e)!.eax).toBe(2);
    expect(t.find((e) => e.function === 0x40000000)).toEqual(supported[5]);
    // KVM's table is not changed.
    expect(supported[1].ebx).toBe(0xff_08_0800);
  });

  test('one vCPU has no HTT', () => {
    const l1 = guestCpuid(supported, { apicId: 0, cpus: 1 }).find((e) => e.function === 1)!;
    expect((l1.edx >>> 28) & 1).toBe(0);
  });

  test('refuses APIC IDs and counts that do not fit', () => {
    expect(() => guestCpuid(supported, { apicId: 1, cpus: 1 })).toThrow(RangeError);
    expect(() => guestCpuid(supported, { apicId: 255, cpus: 256 })).toThrow(RangeError);
    expect(() => guestCpuid(supported, { apicId: 0.5, cpus: 1 })).toThrow(RangeError);
  });

  test('drops XSAVE components whose feature the guest is not told about, and resizes leaf 0xd', () => {
    const xsave = [
      leaf(0xd, { eax: 0x7, ebx: 0x340, ecx: 0x340 }, 0),
      leaf(0xd, { eax: 0x1 }, 1),
      leaf(0xd, { eax: 0x100, ebx: 0x240 }, 2),
    ];
    const noAvx = guestCpuid([leaf(1), ...xsave], { apicId: 0, cpus: 1 });
    expect(noAvx.find((e) => e.function === 0xd && e.index === 0)).toMatchObject({
      eax: 0x3,
      ebx: 576,
      ecx: 576,
    });
    expect(noAvx.some((e) => e.function === 0xd && e.index === 2)).toBe(false);
    const avx = guestCpuid([leaf(1, { ecx: AVX }), ...xsave], { apicId: 0, cpus: 1 });
    expect(avx.find((e) => e.function === 0xd && e.index === 0)).toMatchObject({ eax: 0x7, ebx: 0x340 });
    expect(avx.some((e) => e.function === 0xd && e.index === 2)).toBe(true);
  });
});
