/**
 * The guest's interrupt routing tables: an Intel MultiProcessor Specification 1.4 table.
 *
 * Why the MP table and not ACPI: Linux reads everything this machine needs from it — the local
 * APICs (one per vCPU), the IOAPIC, how ISA IRQs reach IOAPIC pins, and the INTx routing of each
 * PCI device and pin, with polarity and trigger mode — from one static, checksummed structure that
 * needs no AML. With ACPI the same PCI INTx routing lives only in a DSDT's `_PRT` method, so a
 * minimal ACPI would mean generating AML. It is also what kvmtool and Firecracker (before its ACPI
 * work) give Linux on a KVM machine with an in-kernel irqchip.
 * The price: no ACPI power-off. Without ACPI, Linux turns `poweroff` into a halt the VMM cannot see
 * (HLT stays in the in-kernel LAPIC); the guest ends with a reset instead (`reboot -f`, reaching
 * the VMM through the keyboard controller or the reset control register at 0xcf9), and the VMM
 * decides whether a reset means "stop" or "boot again". The guest workload takes `guest.end=reboot`.
 * Linux finds the table by scanning the last KiB of base memory ({@link MPTABLE_START}), which the
 * e820 map must not report as RAM.
 */
import { ArgRangeError, ArgTypeError } from '../base/error';
import { IOAPIC_PINS, type IntxRoute } from './intx';

/** Where PC firmware puts it: the last KiB below 640 KiB (Linux scans there). */
export const MPTABLE_START = 0x9fc00;
/** The end of the MP table's area (640 KiB), exclusive. */
export const MPTABLE_END = 0xa0000;
/** The local APICs' MMIO address, as the table announces it. */
export const LAPIC_ADDRESS = 0xfee00000;
/** The IOAPIC's MMIO address, as the table announces it. */
export const IOAPIC_ADDRESS = 0xfec00000;

const FLOATING_SIZE = 16;
const HEADER_SIZE = 44;
const CPU_SIZE = 20;
const ENTRY_SIZE = 8;

const MP_PROCESSOR = 0;
const MP_BUS = 1;
const MP_IOAPIC = 2;
const MP_INTSRC = 3;
const MP_LINTSRC = 4;

const MP_INT = 0;
const MP_NMI = 1;
const MP_EXTINT = 3;

/** Polarity bits 1:0 and trigger bits 3:2 of an interrupt entry: 0 = as the bus does. */
const IRQ_CONFORMING = 0x0;
const IRQ_LEVEL_LOW = 0x3 | (0x3 << 2);

const BUS_PCI = 0;
const BUS_ISA = 1;

const CPU_ENABLED = 0x1;
const CPU_BOOTSTRAP = 0x2;
/** KVM's LAPIC reports version 0x14 and its IOAPIC 0x11. */
const LAPIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;

/** What the table describes. */
export interface MpTableSpec {
  /** vCPUs, with LAPIC IDs 0..cpus-1 (KVM's vCPU IDs); vCPU 0 boots. */
  readonly cpus: number;
  /** PCI INTx routes on bus 0 (see `pciIntxRoutes`). */
  readonly intx?: readonly IntxRoute[];
}

/** mpTableSize: the bytes {@link writeMpTable} writes for `spec`. */
export function mpTableSize(spec: MpTableSpec): number {
  checkSpec(spec);
  return FLOATING_SIZE + HEADER_SIZE + CPU_SIZE * spec.cpus + ENTRY_SIZE * entryCount(spec);
}

function entryCount(spec: MpTableSpec): number {
  // 2 buses, 1 IOAPIC, 16 ISA IRQs, the PCI routes, 2 local interrupts.
  return 2 + 1 + 16 + (spec.intx?.length ?? 0) + 2;
}

/**
 * writeMpTable: writes the floating pointer and, right after it, the configuration table into
 * `out` (from index 0), for a table that will sit at guest-physical address `gpa`. Returns the size
 * written. ISA IRQ n goes to IOAPIC pin n (KVM's default routing), PCI routes are level-triggered,
 * active low, and LINT0/LINT1 of every LAPIC take ExtINT (the PICs in virtual wire mode) and NMI.
 */
export function writeMpTable(out: Uint8Array, gpa: number, spec: MpTableSpec): number {
  const size = mpTableSize(spec);
  if (!(out instanceof Uint8Array)) throw new ArgTypeError('writeMpTable needs a Uint8Array');
  if (out.length < size)
    throw new ArgRangeError(`the MP table needs ${size} bytes, the buffer has ${out.length}`);
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % 16 !== 0 || gpa + size > 2 ** 32) {
    throw new ArgRangeError(`MP table address ${String(gpa)} must be 16-byte aligned and below 4 GiB`);
  }
  out.fill(0, 0, size);
  const v = new DataView(out.buffer, out.byteOffset, size);

  // Floating pointer structure.
  ascii(out, 0, '_MP_');
  v.setUint32(4, gpa + FLOATING_SIZE, true);
  v.setUint8(8, 1); // length in 16-byte units
  v.setUint8(9, 4); // specification 1.4
  // Feature bytes stay 0: a configuration table follows, and no IMCR (virtual wire mode).
  v.setUint8(10, checksum(out, 0, FLOATING_SIZE));

  const base = FLOATING_SIZE;
  let at = base + HEADER_SIZE;
  const ioapicId = spec.cpus; // after the LAPIC IDs, so they never collide
  for (let id = 0; id < spec.cpus; id++) {
    v.setUint8(at, MP_PROCESSOR);
    v.setUint8(at + 1, id);
    v.setUint8(at + 2, LAPIC_VERSION);
    v.setUint8(at + 3, CPU_ENABLED | (id === 0 ? CPU_BOOTSTRAP : 0));
    v.setUint32(at + 4, 0x600, true); // family 6: what the signature field means to Linux is moot
    v.setUint32(at + 8, 0x201, true); // FPU and APIC present
    at += CPU_SIZE;
  }
  const bus = (id: number, name: string): void => {
    v.setUint8(at, MP_BUS);
    v.setUint8(at + 1, id);
    ascii(out, at + 2, name.padEnd(6, ' '));
    at += ENTRY_SIZE;
  };
  bus(BUS_PCI, 'PCI');
  bus(BUS_ISA, 'ISA');
  v.setUint8(at, MP_IOAPIC);
  v.setUint8(at + 1, ioapicId);
  v.setUint8(at + 2, IOAPIC_VERSION);
  v.setUint8(at + 3, 1); // enabled
  v.setUint32(at + 4, IOAPIC_ADDRESS, true);
  at += ENTRY_SIZE;
  const intsrc = (
    type: number,
    flags: number,
    srcBus: number,
    srcIrq: number,
    dst: number,
    pin: number,
  ): void => {
    v.setUint8(at, MP_INTSRC);
    v.setUint8(at + 1, type);
    v.setUint16(at + 2, flags, true);
    v.setUint8(at + 4, srcBus);
    v.setUint8(at + 5, srcIrq);
    v.setUint8(at + 6, dst);
    v.setUint8(at + 7, pin);
    at += ENTRY_SIZE;
  };
  for (let irq = 0; irq < 16; irq++) intsrc(MP_INT, IRQ_CONFORMING, BUS_ISA, irq, ioapicId, irq);
  for (const r of spec.intx ?? []) {
    // A PCI source IRQ is the device number and the pin: bits 6:2 device, bits 1:0 INTA..INTD.
    intsrc(MP_INT, IRQ_LEVEL_LOW, BUS_PCI, (r.slot << 2) | (r.pin - 1), ioapicId, r.gsi);
  }
  const lint = (type: number, pin: number): void => {
    v.setUint8(at, MP_LINTSRC);
    v.setUint8(at + 1, type);
    v.setUint16(at + 2, IRQ_CONFORMING, true);
    v.setUint8(at + 4, BUS_ISA);
    v.setUint8(at + 5, 0);
    v.setUint8(at + 6, 0xff); // every LAPIC
    v.setUint8(at + 7, pin);
    at += ENTRY_SIZE;
  };
  lint(MP_EXTINT, 0);
  lint(MP_NMI, 1);

  // Configuration table header.
  ascii(out, base, 'PCMP');
  v.setUint16(base + 4, at - base, true);
  v.setUint8(base + 6, 4);
  ascii(out, base + 8, 'VFIOBRDG');
  ascii(out, base + 16, 'NODE VMM    ');
  v.setUint16(base + 34, spec.cpus + entryCount(spec), true);
  v.setUint32(base + 36, LAPIC_ADDRESS, true);
  v.setUint8(base + 7, checksum(out, base, at - base));
  return at;
}

function checkSpec(spec: MpTableSpec): void {
  if (!spec || !Number.isInteger(spec.cpus) || spec.cpus < 1 || spec.cpus > 254) {
    throw new ArgRangeError(`MP table cpus ${String(spec?.cpus)} must be 1..254`);
  }
  for (const r of spec.intx ?? []) {
    const ok =
      Number.isInteger(r.slot) &&
      r.slot >= 0 &&
      r.slot < 32 &&
      Number.isInteger(r.pin) &&
      r.pin >= 1 &&
      r.pin <= 4 &&
      Number.isInteger(r.gsi) &&
      r.gsi >= 0 &&
      r.gsi < IOAPIC_PINS;
    if (!ok)
      throw new ArgRangeError(
        `INTx route ${JSON.stringify(r)} needs slot 0..31, pin 1..4 and gsi 0..${IOAPIC_PINS - 1}`,
      );
  }
}

function ascii(out: Uint8Array, at: number, s: string): void {
  for (let i = 0; i < s.length; i++) out[at + i] = s.charCodeAt(i);
}

/** The byte that makes `len` bytes from `at` sum to 0 modulo 256 (its own slot must hold 0). */
export function checksum(out: Uint8Array, at: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i++) sum = (sum + out[at + i]) & 0xff;
  return (256 - sum) & 0xff;
}
