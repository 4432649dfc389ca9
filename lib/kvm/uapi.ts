/**
 * The KVM uAPI numbers and structure layouts lib/kvm uses (include/uapi/linux/kvm.h, x86-64).
 * Structures that carry policy are encoded here, in TypeScript, and handed to the addon as bytes.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { viewOf } from '../base/values';

/** The only KVM API version there has ever been. */
export const KVM_API_VERSION = 12;

/**
 * Capabilities checked with KVM_CHECK_EXTENSION: the `KVM_CAP_*` numbers of
 * include/uapi/linux/kvm.h, under their names without the prefix.
 */
export const KVM_CAP = {
  /** The in-kernel PIC, IOAPIC and local APICs (KVM_CREATE_IRQCHIP). */
  IRQCHIP: 0,
  /** Memory slots backed by user memory (KVM_SET_USER_MEMORY_REGION). */
  USER_MEMORY: 3,
  /** How many memory slots a VM has (the check returns the count). */
  NR_MEMSLOTS: 10,
  /** GSI routing tables (KVM_SET_GSI_ROUTING). */
  IRQ_ROUTING: 25,
  /** An eventfd that injects a GSI (KVM_IRQFD). */
  IRQFD: 32,
  /** An eventfd signalled by a guest write to an address or port (KVM_IOEVENTFD). */
  IOEVENTFD: 36,
  /** Injecting one MSI message directly (KVM_SIGNAL_MSI). */
  SIGNAL_MSI: 77,
  /** irqfds with a resample eventfd for level-triggered interrupts (KVM_IRQFD_FLAG_RESAMPLE). */
  IRQFD_RESAMPLE: 82,
  /** The local APIC's TSC-deadline timer mode. */
  TSC_DEADLINE_TIMER: 72,
  /** The recommended vCPU count per VM (the check returns it). */
  NR_VCPUS: 9,
  /** The most vCPUs a VM can have (the check returns it). */
  MAX_VCPUS: 66,
  /** kvm_run.immediate_exit, which makes KVM_RUN return at once. */
  IMMEDIATE_EXIT: 136,
  /** Local APICs in the kernel, PIC and IOAPIC in user space (KVM_ENABLE_CAP). */
  SPLIT_IRQCHIP: 121,
  /** Creating in-kernel devices such as KVM-VFIO (KVM_CREATE_DEVICE). */
  DEVICE_CTRL: 89,
} as const;

/** A capability's name. */
export type KvmCapName = keyof typeof KVM_CAP;

/**
 * kvm_run.exit_reason values lib/kvm tells apart: the `KVM_EXIT_*` numbers of
 * include/uapi/linux/kvm.h, under their names without the prefix.
 */
export const KVM_EXIT = {
  /** An exit KVM could not classify (the hardware's reason in kvm_run). */
  UNKNOWN: 0,
  /** A guest exception KVM hands to user space. */
  EXCEPTION: 1,
  /** A port access (IN/OUT). */
  IO: 2,
  /** A hypercall forwarded to user space. */
  HYPERCALL: 3,
  /** A debug exit (breakpoint or single step). */
  DEBUG: 4,
  /** The vCPU executed HLT (only without the in-kernel local APIC). */
  HLT: 5,
  /** An access to guest-physical memory no slot backs (or a write to a read-only slot). */
  MMIO: 6,
  /** The guest can take an interrupt now (after a request for the window). */
  IRQ_WINDOW_OPEN: 7,
  /** The guest shut down, e.g. a triple fault. */
  SHUTDOWN: 8,
  /** VM entry failed (the hardware's reason in kvm_run). */
  FAIL_ENTRY: 9,
  /** KVM_RUN returned for a signal (or immediate_exit). */
  INTR: 10,
  /** KVM could not handle an exit itself (a suberror in kvm_run). */
  INTERNAL_ERROR: 17,
  /** The guest asked for a shutdown, reset or crash report (the type in kvm_run). */
  SYSTEM_EVENT: 24,
} as const;

export const KVM_MEM_READONLY = 1 << 1;
/** kvm_pit_config.flags: the kernel answers port 0x61 (PC speaker, PIT gate 2). */
export const KVM_PIT_SPEAKER_DUMMY = 1;
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
export const KVM_IRQFD_FLAG_RESAMPLE = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;
export const KVM_IRQ_ROUTING_IRQCHIP = 1;
export const KVM_IRQ_ROUTING_MSI = 2;
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;
export const KVM_DEV_TYPE_VFIO = 4;
/** KVM_DEV_VFIO_FILE (formerly KVM_DEV_VFIO_GROUP) and its add/del attributes. */
export const KVM_DEV_VFIO_FILE = 1;
export const KVM_DEV_VFIO_FILE_ADD = 1;
export const KVM_DEV_VFIO_FILE_DEL = 2;

/** struct kvm_regs, in kernel order. */
export const REG_NAMES = [
  'rax',
  'rbx',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'rsp',
  'rbp',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
  'rip',
  'rflags',
] as const;

/** The general registers (struct kvm_regs). Values are bigints: they are 64-bit registers. */
export type Regs = Record<(typeof REG_NAMES)[number], bigint>;

export function decodeRegs(b: Buffer): Regs {
  const out = {} as Regs;
  REG_NAMES.forEach((n, i) => (out[n] = b.readBigUInt64LE(i * 8)));
  return out;
}

export function encodeRegs(r: Regs): Buffer {
  const b = Buffer.alloc(REG_NAMES.length * 8);
  REG_NAMES.forEach((n, i) => {
    const v = r[n];
    if (typeof v !== 'bigint') throw new ArgTypeError(`register ${n} must be a bigint`);
    b.writeBigUInt64LE(BigInt.asUintN(64, v), i * 8);
  });
  return b;
}

/** struct kvm_segment. */
export interface Segment {
  /** Linear base address. */
  base: bigint;
  /** Limit in bytes (already scaled by 4 KiB when `g` is 1). */
  limit: number;
  /** The selector: descriptor-table index, table bit and requested privilege level. */
  selector: number;
  /** The descriptor's 4-bit type field (e.g. 11 for an accessed execute/read code segment). */
  type: number;
  /** Present bit (1 = present). */
  present: number;
  /** Descriptor privilege level, 0 to 3. */
  dpl: number;
  /** Default operation size bit (1 = 32-bit). */
  db: number;
  /** Descriptor type bit: 1 for code or data, 0 for a system segment (TSS, LDT). */
  s: number;
  /** 64-bit code segment bit (long mode). */
  l: number;
  /** Granularity bit (1 = 4 KiB units in the descriptor). */
  g: number;
  /** The bit the descriptor leaves to software. */
  avl: number;
  /** 1 when the segment register holds no usable segment (VMX's "unusable"). */
  unusable: number;
}

/** struct kvm_dtable. */
export interface DescriptorTable {
  /** Linear address of the table. */
  base: bigint;
  /** Size of the table in bytes, minus one (16 bits). */
  limit: number;
}

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CONTROL = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;

/** The special registers (struct kvm_sregs). */
export type Sregs = Record<(typeof SEGMENTS)[number], Segment> &
  Record<'gdt' | 'idt', DescriptorTable> &
  Record<(typeof CONTROL)[number], bigint> & {
    /** Pending external interrupt bitmap (256 bits), as four 64-bit words. */
    interruptBitmap: [bigint, bigint, bigint, bigint];
  };

export const SREGS_SIZE = 8 * 24 + 2 * 16 + 7 * 8 + 4 * 8;

export function decodeSregs(b: Buffer): Sregs {
  if (b.length < SREGS_SIZE) throw new ArgRangeError(`kvm_sregs of ${b.length} bytes is truncated`);
  const dv = viewOf(b);
  const out = {} as Sregs;
  let o = 0;
  for (const name of SEGMENTS) {
    out[name] = {
      base: dv.getBigUint64(o, true),
      limit: dv.getUint32(o + 8, true),
      selector: dv.getUint16(o + 12, true),
      type: b[o + 14]!,
      present: b[o + 15]!,
      dpl: b[o + 16]!,
      db: b[o + 17]!,
      s: b[o + 18]!,
      l: b[o + 19]!,
      g: b[o + 20]!,
      avl: b[o + 21]!,
      unusable: b[o + 22]!,
    };
    o += 24;
  }
  for (const name of ['gdt', 'idt'] as const) {
    out[name] = { base: dv.getBigUint64(o, true), limit: dv.getUint16(o + 8, true) };
    o += 16;
  }
  for (const name of CONTROL) {
    out[name] = dv.getBigUint64(o, true);
    o += 8;
  }
  out.interruptBitmap = [
    dv.getBigUint64(o, true),
    dv.getBigUint64(o + 8, true),
    dv.getBigUint64(o + 16, true),
    dv.getBigUint64(o + 24, true),
  ];
  return out;
}

/** A u64 field of struct kvm_sregs (DataView's setter would wrap what Buffer's refused). */
function u64(v: bigint, what: string): bigint {
  if (typeof v !== 'bigint') throw new ArgTypeError(`sregs ${what} must be a bigint`);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new ArgRangeError(`sregs ${what} ${v} is not a u64`);
  return v;
}

/** A u16 field of struct kvm_sregs. */
function u16(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff)
    throw new ArgRangeError(`sregs ${what} ${String(v)} is not a u16`);
  return v;
}

export function encodeSregs(s: Sregs): Buffer {
  const b = Buffer.alloc(SREGS_SIZE);
  const dv = viewOf(b);
  let o = 0;
  for (const name of SEGMENTS) {
    const g = s[name];
    dv.setBigUint64(o, u64(g.base, `${name}.base`), true);
    dv.setUint32(o + 8, g.limit >>> 0, true);
    dv.setUint16(o + 12, u16(g.selector, `${name}.selector`), true);
    b[o + 14] = g.type;
    b[o + 15] = g.present;
    b[o + 16] = g.dpl;
    b[o + 17] = g.db;
    b[o + 18] = g.s;
    b[o + 19] = g.l;
    b[o + 20] = g.g;
    b[o + 21] = g.avl;
    b[o + 22] = g.unusable;
    o += 24;
  }
  for (const name of ['gdt', 'idt'] as const) {
    dv.setBigUint64(o, u64(s[name].base, `${name}.base`), true);
    dv.setUint16(o + 8, u16(s[name].limit, `${name}.limit`), true);
    o += 16;
  }
  for (const name of CONTROL) {
    dv.setBigUint64(o, u64(s[name], name), true);
    o += 8;
  }
  for (let i = 0; i < 4; i++)
    dv.setBigUint64(o + 8 * i, u64(s.interruptBitmap[i]!, `interruptBitmap[${i}]`), true);
  return b;
}

/** One GSI route: an MSI message, or an irqchip pin. */
export type GsiRoute =
  | {
      /** The GSI the route is for. */
      gsi: number;
      /** The GSI sends an MSI message. */
      kind: 'msi';
      /** Low 32 bits of the message address. */
      addressLo: number;
      /** High 32 bits of the message address. */
      addressHi: number;
      /** The message data. */
      data: number;
    }
  | {
      /** The GSI the route is for. */
      gsi: number;
      /** The GSI drives a pin of an in-kernel interrupt controller. */
      kind: 'irqchip';
      /** Which controller: KVM_IRQCHIP_PIC_MASTER (0), PIC_SLAVE (1) or IOAPIC (2). */
      irqchip: number;
      /** The pin on that controller (0-7 on a PIC, 0-23 on the IOAPIC). */
      pin: number;
    };

const ROUTE_HEADER = 8;
const ROUTE_ENTRY = 48;

/** struct kvm_irq_routing with its entries. */
export function encodeRouting(routes: readonly GsiRoute[]): Buffer {
  const b = Buffer.alloc(ROUTE_HEADER + routes.length * ROUTE_ENTRY);
  b.writeUInt32LE(routes.length, 0);
  routes.forEach((r, i) => {
    const o = ROUTE_HEADER + i * ROUTE_ENTRY;
    b.writeUInt32LE(r.gsi, o);
    if (r.kind === 'msi') {
      b.writeUInt32LE(KVM_IRQ_ROUTING_MSI, o + 4);
      b.writeUInt32LE(r.addressLo >>> 0, o + 16);
      b.writeUInt32LE(r.addressHi >>> 0, o + 20);
      b.writeUInt32LE(r.data >>> 0, o + 24);
    } else {
      b.writeUInt32LE(KVM_IRQ_ROUTING_IRQCHIP, o + 4);
      b.writeUInt32LE(r.irqchip, o + 16);
      b.writeUInt32LE(r.pin, o + 20);
    }
  });
  return b;
}
