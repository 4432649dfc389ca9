/**
 * The CPUID a Linux guest of this VMM sees: what KVM_GET_SUPPORTED_CPUID offers, with the
 * per-vCPU facts KVM leaves to the VMM filled in, as QEMU and Firecracker do:
 * - the initial APIC ID (leaf 1 EBX[31:24], the x2APIC ID of leaves 0xb/0x1f EDX and AMD's
 *   extended APIC ID in leaf 0x8000001e EAX) must be the vCPU's id, or Linux's SMP bring-up and
 *   the MP table's APIC IDs disagree;
 * - leaf 1 EBX[23:16] counts the logical processors of the package, with EDX HTT for more than one;
 * - leaf 1 ECX bit 31 says "running under a hypervisor", which is what makes Linux look at KVM's
 *   leaves 0x40000000+ and use kvm-clock. Nested under TCG the TSC cannot be calibrated against
 *   the PIT reliably, so kvm-clock is what gives the guest a sane clock.
 * - leaf 1 ECX bit 24 announces the local APIC's TSC-deadline mode, which KVM's in-kernel APIC
 *   emulates but KVM_GET_SUPPORTED_CPUID does not list (KVM_CAP_TSC_DEADLINE_TIMER says it): with
 *   it the guest programs its timer in TSC time and never calibrates the APIC timer against the PIT,
 *   a check that fails now and then nested under TCG (the guest then falls back to the PIT);
 * - leaf 0xd's XSAVE components must match the features the guest is told about: Linux sizes
 *   its FPU state from the components whose feature bits it sees and warns ("XSAVE consistency
 *   problem") when leaf 0xd reports a larger size. KVM can list a component (AVX under the lab's
 *   emulated EPYC) whose feature bit it does not offer, so such components are removed here.
 * KVM's supported list already carries the KVM signature and features leaves.
 */
import { ArgRangeError } from '../base/error';
import type { CpuidEntry } from '../kvm/x86';

const HYPERVISOR = 1 << 31;
const HTT = 1 << 28;
const TSC_DEADLINE = 1 << 24;

/** XSAVE components beyond x87/SSE and the CPUID bit that announces each (leaf, register, bit). */
const XSAVE_FEATURES: readonly { component: number; leaf: number; reg: 'ebx' | 'ecx'; bit: number }[] = [
  { component: 2, leaf: 1, reg: 'ecx', bit: 28 }, // AVX
  { component: 3, leaf: 7, reg: 'ebx', bit: 14 }, // MPX bound registers
  { component: 4, leaf: 7, reg: 'ebx', bit: 14 }, // MPX BNDCSR
  { component: 5, leaf: 7, reg: 'ebx', bit: 16 }, // AVX-512 opmask
  { component: 6, leaf: 7, reg: 'ebx', bit: 16 }, // AVX-512 ZMM_Hi256
  { component: 7, leaf: 7, reg: 'ebx', bit: 16 }, // AVX-512 Hi16_ZMM
  { component: 9, leaf: 7, reg: 'ecx', bit: 3 }, // PKRU
];
const XSAVE_LEGACY_SIZE = 512 + 64;

/** Options of {@link guestCpuid}. */
export interface GuestCpuidOptions {
  /** This vCPU's id, which KVM uses as its APIC ID. */
  readonly apicId: number;
  /** vCPUs in the machine. */
  readonly cpus: number;
  /** Announce the TSC-deadline timer (when KVM reports KVM_CAP_TSC_DEADLINE_TIMER). */
  readonly tscDeadline?: boolean;
}

/** guestCpuid: the CPUID table for one vCPU, from KVM's supported table (which is not changed). */
export function guestCpuid(supported: readonly CpuidEntry[], opts: GuestCpuidOptions): CpuidEntry[] {
  const { apicId, cpus } = opts;
  if (!Number.isInteger(apicId) || apicId < 0 || apicId > 254)
    throw new ArgRangeError(`APIC ID ${String(apicId)} is not in 0..254 (xAPIC)`);
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 255 || apicId >= cpus)
    throw new ArgRangeError(`${String(cpus)} vCPUs cannot hold APIC ID ${apicId}`);
  const out = supported.map((s) => {
    const e = { ...s };
    switch (e.function) {
      case 1:
        e.ebx = ((e.ebx & 0xffff) | (cpus << 16) | (apicId << 24)) >>> 0;
        e.ecx = (e.ecx | HYPERVISOR | (opts.tscDeadline ? TSC_DEADLINE : 0)) >>> 0;
        e.edx = (cpus > 1 ? e.edx | HTT : e.edx & ~HTT) >>> 0;
        break;
      case 0xb:
      case 0x1f:
        e.edx = apicId;
        break;
      case 0x8000001e:
        e.eax = apicId;
        break;
    }
    return e;
  });
  return trimXsave(out);
}

function trimXsave(entries: CpuidEntry[]): CpuidEntry[] {
  const find = (fn: number, index = 0): CpuidEntry | undefined =>
    entries.find((e) => e.function === fn && e.index === index);
  const xsave = find(0xd, 0);
  if (!xsave) return entries;
  let mask = xsave.eax;
  for (const f of XSAVE_FEATURES) {
    const leaf = find(f.leaf);
    if (!leaf || ((leaf[f.reg] >>> f.bit) & 1) === 0) mask &= ~(1 << f.component);
  }
  if (mask === xsave.eax) return entries;
  let size = XSAVE_LEGACY_SIZE;
  for (let c = 2; c < 32; c++) {
    const comp = find(0xd, c);
    if ((mask >>> c) & 1 && comp) size = Math.max(size, comp.ebx + comp.eax);
  }
  xsave.eax = mask >>> 0;
  xsave.ebx = size;
  xsave.ecx = size;
  return entries.filter((e) => e.function !== 0xd || e.index < 2 || (mask >>> e.index) & 1);
}
