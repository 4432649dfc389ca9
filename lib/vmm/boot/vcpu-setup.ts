/**
 * Puts a freshly created KVM vCPU into the state Linux's boot protocol asks for: CPUID (see
 * cpuid.ts), the FPU as after FNINIT, the local APIC's LINT0/LINT1 wired as on a PC (ExtINT from
 * the PICs, NMI), and the registers of {@link BootCpuState}. The same call serves every boot of
 * the machine, since each boot gets a fresh VM.
 */
import { runSteps } from '../../base/steps';
import type { CpuidEntry, Regs, Segment, Sregs, Vcpu } from '../../kvm';
import { guestCpuid } from '../cpuid';
import type { BootCpuState, KvmSegment } from './cpu-state';

const APIC_LVT0 = 0x350;
const APIC_LVT1 = 0x360;
const DELIVERY_MODE = 0x700;
const MODE_NMI = 0x400;
const MODE_EXTINT = 0x700;

/** The local APIC register page with LINT0 as ExtINT and LINT1 as NMI (masks left as they are). */
export function pcLapic(state: Buffer): Buffer {
  const out = Buffer.from(state);
  out.writeUInt32LE(((out.readUInt32LE(APIC_LVT0) & ~DELIVERY_MODE) | MODE_EXTINT) >>> 0, APIC_LVT0);
  out.writeUInt32LE(((out.readUInt32LE(APIC_LVT1) & ~DELIVERY_MODE) | MODE_NMI) >>> 0, APIC_LVT1);
  return out;
}

function segment(s: KvmSegment): Segment {
  return { ...s, base: BigInt(s.base) };
}

/** What {@link setupBootVcpu} needs besides the vCPU and its registers. */
export interface BootVcpuOptions {
  /** What KVM supports (Kvm.supportedCpuid), which the guest's CPUID is cut from. */
  supportedCpuid: readonly CpuidEntry[];
  /** How many vCPUs the machine has (CPUID's logical processor count). */
  cpus: number;
  /** Whether to show the TSC-deadline timer (KVM's in-kernel APIC emulates it). */
  tscDeadline?: boolean;
}

/** setupBootVcpu: CPUID, FPU, LAPIC, and with `cpu` the registers for the kernel's entry. */
export function setupBootVcpu(vcpu: Vcpu, cpu: BootCpuState | null, opts: BootVcpuOptions): void {
  runSteps(setupBootVcpuSteps(vcpu, cpu, opts));
}

/**
 * {@link setupBootVcpu} in steps (the CPUID table made; set; the FPU and the local APIC; the
 * segment registers; the others), for a caller that gives the event loop a turn between them.
 * @internal
 */
export function* setupBootVcpuSteps(
  vcpu: Vcpu,
  cpu: BootCpuState | null,
  opts: BootVcpuOptions,
): Generator<'cpuid-table' | 'cpuid' | 'lapic' | 'sregs', void> {
  const table = guestCpuid(opts.supportedCpuid, {
    apicId: vcpu.id,
    cpus: opts.cpus,
    tscDeadline: opts.tscDeadline ?? false,
  });
  yield 'cpuid-table';
  vcpu.setCpuid(table);
  yield 'cpuid';
  vcpu.setFpu();
  vcpu.setLapic(pcLapic(vcpu.getLapic()));
  if (cpu === null) return;
  yield 'lapic';
  const s: Sregs = vcpu.getSregs();
  const c = cpu.sregs;
  s.cs = segment(c.cs);
  s.ds = segment(c.ds);
  s.es = segment(c.es);
  s.fs = segment(c.fs);
  s.gs = segment(c.gs);
  s.ss = segment(c.ss);
  s.tr = segment(c.tr);
  s.ldt = segment(c.ldt);
  s.gdt = { base: BigInt(c.gdt.base), limit: c.gdt.limit };
  s.idt = { base: BigInt(c.idt.base), limit: c.idt.limit };
  s.cr0 = BigInt(c.cr0);
  s.cr3 = BigInt(c.cr3);
  s.cr4 = BigInt(c.cr4);
  s.efer = BigInt(c.efer);
  vcpu.setSregs(s);
  yield 'sregs';
  const r = vcpu.getRegs();
  for (const k of Object.keys(r) as (keyof Regs)[]) r[k] = 0n;
  r.rip = BigInt(cpu.regs.rip);
  r.rsi = BigInt(cpu.regs.rsi);
  r.rsp = BigInt(cpu.regs.rsp);
  r.rbp = BigInt(cpu.regs.rbp);
  r.rflags = BigInt(cpu.regs.rflags);
  vcpu.setRegs(r);
}
