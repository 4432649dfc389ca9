/**
 * The KVM uAPI numbers and structure layouts lib/kvm uses (include/uapi/linux/kvm.h, x86-64).
 * Structures that carry policy are encoded here, in TypeScript, and handed to the addon as bytes.
 */
import { ArgTypeError } from '../base/error';

/** The only KVM API version there has ever been. */
export const KVM_API_VERSION = 12;

/** Capabilities checked with KVM_CHECK_EXTENSION. */
export const KVM_CAP = {
  IRQCHIP: 0,
  USER_MEMORY: 3,
  NR_MEMSLOTS: 10,
  IRQ_ROUTING: 25,
  IRQFD: 32,
  IOEVENTFD: 36,
  SIGNAL_MSI: 77,
  IRQFD_RESAMPLE: 82,
  TSC_DEADLINE_TIMER: 72,
  NR_VCPUS: 9,
  MAX_VCPUS: 66,
  IMMEDIATE_EXIT: 136,
  SPLIT_IRQCHIP: 121,
  DEVICE_CTRL: 89,
} as const;

/** A capability's name. */
export type KvmCapName = keyof typeof KVM_CAP;

/** kvm_run.exit_reason values lib/kvm tells apart. */
export const KVM_EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  INTERNAL_ERROR: 17,
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
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

/** struct kvm_dtable. */
export interface DescriptorTable {
  base: bigint;
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
  const out = {} as Sregs;
  let o = 0;
  for (const name of SEGMENTS) {
    out[name] = {
      base: b.readBigUInt64LE(o),
      limit: b.readUInt32LE(o + 8),
      selector: b.readUInt16LE(o + 12),
      type: b[o + 14],
      present: b[o + 15],
      dpl: b[o + 16],
      db: b[o + 17],
      s: b[o + 18],
      l: b[o + 19],
      g: b[o + 20],
      avl: b[o + 21],
      unusable: b[o + 22],
    };
    o += 24;
  }
  for (const name of ['gdt', 'idt'] as const) {
    out[name] = { base: b.readBigUInt64LE(o), limit: b.readUInt16LE(o + 8) };
    o += 16;
  }
  for (const name of CONTROL) {
    out[name] = b.readBigUInt64LE(o);
    o += 8;
  }
  out.interruptBitmap = [0, 1, 2, 3].map((i) => b.readBigUInt64LE(o + 8 * i)) as Sregs['interruptBitmap'];
  return out;
}

export function encodeSregs(s: Sregs): Buffer {
  const b = Buffer.alloc(SREGS_SIZE);
  let o = 0;
  for (const name of SEGMENTS) {
    const g = s[name];
    b.writeBigUInt64LE(g.base, o);
    b.writeUInt32LE(g.limit >>> 0, o + 8);
    b.writeUInt16LE(g.selector, o + 12);
    [g.type, g.present, g.dpl, g.db, g.s, g.l, g.g, g.avl, g.unusable].forEach((v, i) => (b[o + 14 + i] = v));
    o += 24;
  }
  for (const name of ['gdt', 'idt'] as const) {
    b.writeBigUInt64LE(s[name].base, o);
    b.writeUInt16LE(s[name].limit, o + 8);
    o += 16;
  }
  for (const name of CONTROL) {
    b.writeBigUInt64LE(s[name], o);
    o += 8;
  }
  s.interruptBitmap.forEach((v, i) => b.writeBigUInt64LE(v, o + 8 * i));
  return b;
}

/** One GSI route: an MSI message, or an irqchip pin. */
export type GsiRoute =
  | { gsi: number; kind: 'msi'; addressLo: number; addressHi: number; data: number }
  | { gsi: number; kind: 'irqchip'; irqchip: number; pin: number };

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
