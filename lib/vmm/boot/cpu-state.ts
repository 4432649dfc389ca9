/**
 * The vCPU state Linux's boot protocol asks for at the kernel's entry, as data: the GDT and (for
 * the 64-bit entry) identity-mapping page tables written into guest RAM, and the register and
 * segment values, in the shape of KVM's `kvm_regs`/`kvm_sregs`/`kvm_segment`, for a VMM to load
 * with KVM_SET_REGS and KVM_SET_SREGS before the first KVM_RUN. CPUID (KVM_SET_CPUID2 from
 * KVM_GET_SUPPORTED_CPUID) and the MSRs stay the VMM's business.
 */
import { ArgTypeError } from '../../base/error';
import { viewOf } from '../../base/values';
import { VmmError } from '../errors';
import { bootRamOf, type BootRam } from './boot-ram';

/** Where the boot GDT goes (below the zero page, in memory firmware leaves alone). */
export const BOOT_GDT_ADDR = 0x500;
/** The stack the entry code may use until it sets its own. */
export const BOOT_STACK_POINTER = 0x8ff0;
/** PML4, one PDPT and four page directories (2 MiB pages): 0-4 GiB mapped 1:1. */
export const BOOT_PML4_ADDR = 0x9000;
const BOOT_PDPT_ADDR = 0xa000;
const BOOT_PD_ADDR = 0xb000;
const PAGE_TABLES_END = BOOT_PD_ADDR + 4 * 0x1000;

/** The selectors the boot protocol names: __BOOT_CS and __BOOT_DS. */
export const BOOT_CS = 0x10;
/** __BOOT_DS: the flat data segment's selector. */
export const BOOT_DS = 0x18;
const BOOT_TSS = 0x20;

const CR0_PE = 0x1;
const CR0_ET = 0x10;
const CR0_PG = 0x80000000;
const CR4_PAE = 0x20;
const EFER_LME = 0x100;
const EFER_LMA = 0x400;

/** A segment register as KVM's `struct kvm_segment` holds it (limit in bytes). */
export interface KvmSegment {
  /** Linear base address (0 for the boot segments). */
  readonly base: number;
  /** Limit in bytes, already scaled by 4 KiB when `g` is 1. */
  readonly limit: number;
  /** The selector loaded, e.g. {@link BOOT_CS}. */
  readonly selector: number;
  /** The 4-bit type field: 11 here for code (execute/read) and the busy TSS, 3 for data, 2 for the LDT. */
  readonly type: number;
  /** Present bit (1 = present). */
  readonly present: number;
  /** Descriptor privilege level, 0 to 3. */
  readonly dpl: number;
  /** Default operation size bit (1 = 32-bit; 0 in a 64-bit code segment). */
  readonly db: number;
  /** Descriptor type bit: 1 for code or data, 0 for a system segment (TSS, LDT). */
  readonly s: number;
  /** 64-bit code segment bit. */
  readonly l: number;
  /** Granularity bit (1 = the descriptor's limit counts 4 KiB units). */
  readonly g: number;
  /** The bit the descriptor leaves to software. */
  readonly avl: number;
  /** 1 when the register holds no usable segment (the boot LDT). */
  readonly unusable: number;
}

/** A descriptor table register (`struct kvm_dtable`). */
export interface KvmDtable {
  /** Linear address of the table (the boot tables lie where linear = guest-physical). */
  readonly base: number;
  /** Size of the table in bytes, minus one. */
  readonly limit: number;
}

/** The vCPU state at the kernel's entry. Registers not named are zero. */
export interface BootCpuState {
  /** Which entry point: the 64-bit one (long mode, paging on) or the 32-bit one (paging off). */
  readonly mode: '64' | '32';
  /** The general registers to set (KVM_SET_REGS); the others are zero. */
  readonly regs: {
    /** The entry point (guest-physical): for loadLinux, the load address, plus 0x200 in 64-bit mode. */
    readonly rip: number;
    /** Guest-physical address of boot_params (the zero page). */
    readonly rsi: number;
    /** A stack for the entry code, {@link BOOT_STACK_POINTER}. */
    readonly rsp: number;
    /** 0, as the 32-bit protocol asks. */
    readonly rbp: number;
    /** 0x2: interrupts off (bit 1 always reads as 1). */
    readonly rflags: number;
  };
  /** The special registers to set (KVM_SET_SREGS). */
  readonly sregs: {
    /** `__BOOT_CS`: flat code, 64-bit or 32-bit by `mode`. */
    readonly cs: KvmSegment;
    /** `__BOOT_DS`: flat 4 GiB read/write data. */
    readonly ds: KvmSegment;
    /** The same as `ds`. */
    readonly es: KvmSegment;
    /** The same as `ds`. */
    readonly fs: KvmSegment;
    /** The same as `ds`. */
    readonly gs: KvmSegment;
    /** The same as `ds`. */
    readonly ss: KvmSegment;
    /** A busy TSS from the boot GDT (VMX refuses an entry without a usable TR). */
    readonly tr: KvmSegment;
    /** No LDT: marked unusable. */
    readonly ldt: KvmSegment;
    /** The boot GDT at {@link BOOT_GDT_ADDR} (five entries). */
    readonly gdt: KvmDtable;
    /** Empty (base 0, limit 0): the kernel sets up its own. */
    readonly idt: KvmDtable;
    /** Protection on (PE, ET), and paging (PG) in 64-bit mode. */
    readonly cr0: number;
    /** The PML4's address ({@link BOOT_PML4_ADDR}) in 64-bit mode, else 0. */
    readonly cr3: number;
    /** PAE in 64-bit mode, else 0. */
    readonly cr4: number;
    /** LME and LMA in 64-bit mode, else 0. */
    readonly efer: number;
  };
  /** Guest-physical ranges this state needs, already written into RAM: the GDT and page tables. */
  readonly written: readonly {
    /** Guest-physical address of the range. */
    readonly addr: number;
    /** Length in bytes. */
    readonly size: number;
    /** What it holds, e.g. `boot GDT`. */
    readonly what: string;
  }[];
}

/**
 * gdtEntry: one 8-byte descriptor from `flags` (access byte in bits 7:0, G/DB/L/AVL in bits
 * 15:12, as the kernel's GDT_ENTRY macro takes them), base and 20-bit limit.
 */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit & 0xfffff);
  const f = BigInt(flags & 0xf0ff);
  return (
    ((b & 0xff000000n) << 32n) |
    (f << 40n) |
    ((l & 0xf0000n) << 32n) |
    ((b & 0x00ffffffn) << 16n) |
    (l & 0xffffn)
  );
}

/** segmentOf: the KVM view of descriptor `entry` loaded with `selector`. */
export function segmentOf(entry: bigint, selector: number): KvmSegment {
  const bits = (shift: bigint, mask: bigint): number => Number((entry >> shift) & mask);
  const g = bits(55n, 1n);
  const rawLimit = bits(0n, 0xffffn) | (bits(48n, 0xfn) << 16);
  return {
    base: (bits(16n, 0xffffffn) | (bits(56n, 0xffn) << 24)) >>> 0,
    limit: g ? (rawLimit * 0x1000 + 0xfff) >>> 0 : rawLimit,
    selector,
    type: bits(40n, 0xfn),
    s: bits(44n, 1n),
    dpl: bits(45n, 3n),
    present: bits(47n, 1n),
    avl: bits(52n, 1n),
    l: bits(53n, 1n),
    db: bits(54n, 1n),
    g,
    unusable: 0,
  };
}

const CODE64 = 0xa09b; // G, L, present, code execute/read, accessed
const CODE32 = 0xc09b; // G, D/B, present, code execute/read, accessed
const DATA = 0xc093; // G, D/B, present, data read/write, accessed
const TSS = 0x808b; // G, present, busy 32/64-bit TSS (VMX refuses an entry without a usable TR)

/**
 * writeBootCpuState: writes the boot GDT (null, null, __BOOT_CS, __BOOT_DS, TSS) and, for the
 * 64-bit entry, page tables mapping 0-4 GiB 1:1 with 2 MiB pages into `ram` (bytes indexed by
 * guest-physical address, or a {@link BootRam}: one window for the GDT, one for the page tables),
 * and returns the state for a vCPU entering the kernel at `entry` with
 * boot_params at `zeroPage`:
 * - '64': long mode, paging on, CS = __BOOT_CS (64-bit code), the data segments = __BOOT_DS,
 *   RIP = the kernel's load address + 0x200, RSI = boot_params;
 * - '32': protected mode, paging off, flat 4 GiB segments, EIP = code32_start, ESI = boot_params
 *   (the protocol wants EBP, EDI and EBX zero, which they are).
 * Interrupts are off (RFLAGS = 0x2).
 */
export function writeBootCpuState(
  ram: Uint8Array | BootRam,
  mode: '64' | '32',
  entry: number,
  zeroPage: number,
): BootCpuState {
  if (mode !== '64' && mode !== '32')
    throw new ArgTypeError(`boot mode must be '64' or '32', got ${String(mode)}`);
  const need = mode === '64' ? PAGE_TABLES_END : BOOT_GDT_ADDR + 8 * 5;
  const mem = bootRamOf(ram, 'writeBootCpuState');
  if (mem.length < need) {
    throw new VmmError(
      'ENOSPACE',
      `the boot GDT and page tables need guest RAM up to 0x${need.toString(16)}`,
    );
  }
  const code = gdtEntry(mode === '64' ? CODE64 : CODE32, 0, 0xfffff);
  const data = gdtEntry(DATA, 0, 0xfffff);
  const tss = gdtEntry(TSS, 0, 0xfffff);
  const gdt = [0n, 0n, code, data, tss];
  const g = viewOf(mem.bytes(BOOT_GDT_ADDR, 8 * gdt.length));
  gdt.forEach((e, i) => g.setBigUint64(8 * i, e, true));
  const written = [{ addr: BOOT_GDT_ADDR, size: 8 * gdt.length, what: 'boot GDT' }];

  let cr0 = CR0_PE | CR0_ET;
  let cr3 = 0;
  let cr4 = 0;
  let efer = 0;
  if (mode === '64') {
    const tables = mem.bytes(BOOT_PML4_ADDR, PAGE_TABLES_END - BOOT_PML4_ADDR);
    tables.fill(0);
    // Offsets in the window are guest-physical addresses less BOOT_PML4_ADDR.
    const t = viewOf(tables);
    const at = (gpa: number): number => gpa - BOOT_PML4_ADDR;
    t.setBigUint64(at(BOOT_PML4_ADDR), BigInt(BOOT_PDPT_ADDR | 0x3), true); // present, writable
    for (let i = 0; i < 4; i++) {
      const pd = BOOT_PD_ADDR + i * 0x1000;
      t.setBigUint64(at(BOOT_PDPT_ADDR + 8 * i), BigInt(pd | 0x3), true);
      for (let j = 0; j < 512; j++) {
        const addr = BigInt(i) * 0x40000000n + BigInt(j) * 0x200000n;
        t.setBigUint64(at(pd + 8 * j), addr | 0x83n, true); // present, writable, 2 MiB page
      }
    }
    written.push({
      addr: BOOT_PML4_ADDR,
      size: PAGE_TABLES_END - BOOT_PML4_ADDR,
      what: 'identity page tables 0-4 GiB',
    });
    cr0 |= CR0_PG;
    cr3 = BOOT_PML4_ADDR;
    cr4 = CR4_PAE;
    efer = EFER_LME | EFER_LMA;
  }
  const ds = segmentOf(data, BOOT_DS);
  return {
    mode,
    regs: { rip: entry, rsi: zeroPage, rsp: BOOT_STACK_POINTER, rbp: 0, rflags: 0x2 },
    sregs: {
      cs: segmentOf(code, BOOT_CS),
      ds,
      es: ds,
      fs: ds,
      gs: ds,
      ss: ds,
      tr: segmentOf(tss, BOOT_TSS),
      ldt: { ...segmentOf(0n, 0), type: 2, unusable: 1 },
      gdt: { base: BOOT_GDT_ADDR, limit: 8 * gdt.length - 1 },
      idt: { base: 0, limit: 0 },
      cr0: cr0 >>> 0,
      cr3,
      cr4,
      efer,
    },
    written,
  };
}
