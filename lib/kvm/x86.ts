/**
 * The x86 vCPU state tables lib/kvm hands to KVM as bytes (include/uapi/asm/kvm.h, x86-64):
 * struct kvm_cpuid2 with kvm_cpuid_entry2, struct kvm_msrs with kvm_msr_entry, struct kvm_fpu and
 * the local APIC page of struct kvm_lapic_state. What goes into them is the VMM's policy (see
 * lib/vmm/cpuid.ts); this file only lays them out.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { viewOf } from '../base/values';

/** One CPUID leaf/subleaf as KVM_GET_SUPPORTED_CPUID reports it and KVM_SET_CPUID2 takes it. */
export interface CpuidEntry {
  /** The leaf: the EAX value CPUID is executed with. */
  function: number;
  /** The subleaf: the ECX value the entry applies to, when `flags` marks the index significant. */
  index: number;
  /** KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1): the entry applies only to this `index`. */
  flags: number;
  /** EAX as CPUID returns it for this leaf. */
  eax: number;
  /** EBX as CPUID returns it. */
  ebx: number;
  /** ECX as CPUID returns it. */
  ecx: number;
  /** EDX as CPUID returns it. */
  edx: number;
}

/** KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the subleaf (ECX) selects the entry. */
export const CPUID_FLAG_SIGNIFICANT_INDEX = 1;

const TABLE_HEADER = 8;
const CPUID_ENTRY = 40;
const MSR_ENTRY = 16;
/** sizeof(struct kvm_fpu) and the offsets of the two control words a VMM sets. */
export const FPU_SIZE = 416;
const FPU_FCW = 128;
const FPU_MXCSR = 408;
/** sizeof(struct kvm_lapic_state): the APIC's 4 KiB register page cut to its first KiB. */
export const LAPIC_STATE_SIZE = 1024;

const u32 = (v: number, what: string): number => {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw new ArgRangeError(`${what} ${String(v)} is not a u32`);
  return v;
};

/** A 32-bit register value: unsigned, or the signed result of JavaScript's bit operators. */
const reg = (v: number, what: string): number => {
  if (!Number.isInteger(v) || v < -(2 ** 31) || v > 0xffffffff)
    throw new ArgRangeError(`${what} ${String(v)} is not a 32-bit value`);
  return v >>> 0;
};

/** Decode a struct kvm_cpuid2 (as KVM_GET_SUPPORTED_CPUID returns it). */
export function decodeCpuid(b: Buffer): CpuidEntry[] {
  if (b.length < TABLE_HEADER) throw new ArgRangeError(`kvm_cpuid2 of ${b.length} bytes has no header`);
  const dv = viewOf(b);
  const n = dv.getUint32(0, true);
  if (b.length < TABLE_HEADER + n * CPUID_ENTRY)
    throw new ArgRangeError(`kvm_cpuid2 of ${n} entries is truncated`);
  const out: CpuidEntry[] = new Array(n);
  for (let i = 0, o = TABLE_HEADER; i < n; i++, o += CPUID_ENTRY) {
    out[i] = {
      function: dv.getUint32(o, true),
      index: dv.getUint32(o + 4, true),
      flags: dv.getUint32(o + 8, true),
      eax: dv.getUint32(o + 12, true),
      ebx: dv.getUint32(o + 16, true),
      ecx: dv.getUint32(o + 20, true),
      edx: dv.getUint32(o + 24, true),
    };
  }
  return out;
}

/** Encode a struct kvm_cpuid2 for KVM_SET_CPUID2. */
export function encodeCpuid(entries: readonly CpuidEntry[]): Buffer {
  if (!Array.isArray(entries)) throw new ArgTypeError('CPUID entries must be an array');
  const b = Buffer.alloc(TABLE_HEADER + entries.length * CPUID_ENTRY);
  const dv = viewOf(b);
  dv.setUint32(0, entries.length, true);
  for (let i = 0, o = TABLE_HEADER; i < entries.length; i++, o += CPUID_ENTRY) {
    const e = entries[i]!;
    dv.setUint32(o, u32(e.function, 'CPUID function'), true);
    dv.setUint32(o + 4, u32(e.index, 'CPUID index'), true);
    dv.setUint32(o + 8, u32(e.flags, 'CPUID flags'), true);
    dv.setUint32(o + 12, reg(e.eax, 'CPUID eax'), true);
    dv.setUint32(o + 16, reg(e.ebx, 'CPUID ebx'), true);
    dv.setUint32(o + 20, reg(e.ecx, 'CPUID ecx'), true);
    dv.setUint32(o + 24, reg(e.edx, 'CPUID edx'), true);
  }
  return b;
}

/** Encode a struct kvm_msrs for KVM_SET_MSRS. */
export function encodeMsrs(msrs: readonly { index: number; value: bigint }[]): Buffer {
  if (!Array.isArray(msrs)) throw new ArgTypeError('MSRs must be an array');
  const b = Buffer.alloc(TABLE_HEADER + msrs.length * MSR_ENTRY);
  b.writeUInt32LE(msrs.length, 0);
  msrs.forEach((m, i) => {
    if (typeof m.value !== 'bigint')
      throw new ArgTypeError(`MSR 0x${m.index.toString(16)} value must be a bigint`);
    const o = TABLE_HEADER + i * MSR_ENTRY;
    b.writeUInt32LE(u32(m.index, 'MSR index'), o);
    b.writeBigUInt64LE(BigInt.asUintN(64, m.value), o + 8);
  });
  return b;
}

/** A struct kvm_fpu with only the x87 control word and MXCSR set (everything else as after FNINIT). */
export function encodeFpu(fcw: number, mxcsr: number): Buffer {
  const b = Buffer.alloc(FPU_SIZE);
  b.writeUInt16LE(fcw & 0xffff, FPU_FCW);
  b.writeUInt32LE(u32(mxcsr, 'MXCSR'), FPU_MXCSR);
  return b;
}
