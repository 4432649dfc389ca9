import type { PciHostBridge } from './pci-host';

/** Pins of the IOAPIC (KVM's in-kernel IOAPIC has 24). */
export const IOAPIC_PINS = 24;
/** The first IOAPIC pin left for PCI INTx; 0-15 are the ISA IRQs. */
export const PCI_INTX_GSI_BASE = 16;
const PCI_INTX_LINES = IOAPIC_PINS - PCI_INTX_GSI_BASE;

/** One PCI function's INTx pin and the IOAPIC input (GSI) it is wired to. */
export interface IntxRoute {
  readonly slot: number;
  readonly fn: number;
  /** 1 = INTA … 4 = INTD, as the interrupt pin register says. */
  readonly pin: number;
  readonly gsi: number;
}

/**
 * pciIntxGsi: the board wiring of bus 0's INTx pins to IOAPIC inputs 16-23: the pins rotate with
 * the slot, as on a PC, so functions in neighbouring slots do not all share INTA's line. The VMM
 * wires the resample irqfd of a device's INTx to this GSI, and the interrupt tables tell the guest
 * the same thing: the one function both read keeps them in step.
 */
export function pciIntxGsi(slot: number, pin: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot > 31)
    throw new RangeError(`PCI slot ${String(slot)} is out of range 0..31`);
  if (!Number.isInteger(pin) || pin < 1 || pin > 4)
    throw new RangeError(`INTx pin ${String(pin)} is out of range 1..4`);
  return PCI_INTX_GSI_BASE + ((slot + pin - 1) % PCI_INTX_LINES);
}

/**
 * pciIntxRoutes: the INTx route of every function on the host bridge that has an interrupt pin,
 * read from its interrupt pin register (0x3d), in devfn order.
 */
export function pciIntxRoutes(
  host: PciHostBridge,
  gsiOf: (slot: number, pin: number) => number = pciIntxGsi,
): IntxRoute[] {
  const out: IntxRoute[] = [];
  for (const { slot, fn, target } of host.functions()) {
    const pin = target.configRead(0x3d, 1);
    if (pin < 1 || pin > 4) continue;
    out.push({ slot, fn, pin, gsi: gsiOf(slot, pin) });
  }
  return out;
}

/** One entry of KVM's GSI routing table that wires a GSI to an irqchip pin. */
export interface IrqchipRoute {
  readonly gsi: number;
  /** KVM_IRQCHIP_PIC_MASTER (0), KVM_IRQCHIP_PIC_SLAVE (1) or KVM_IRQCHIP_IOAPIC (2). */
  readonly irqchip: 0 | 1 | 2;
  readonly pin: number;
}

/**
 * defaultIrqchipRoutes: KVM's default GSI routing for an in-kernel irqchip (GSI n to IOAPIC pin n,
 * and GSIs 0-15 also to the PICs). KVM_SET_GSI_ROUTING replaces the whole table, so a VMM that adds
 * MSI routes must send these with them, or the timer, the UART and INTx stop arriving. The interrupt
 * tables built here (ISA IRQ n on IOAPIC pin n) assume exactly this wiring.
 */
export function defaultIrqchipRoutes(): IrqchipRoute[] {
  const out: IrqchipRoute[] = [];
  for (let gsi = 0; gsi < IOAPIC_PINS; gsi++) {
    if (gsi < 16) out.push({ gsi, irqchip: gsi < 8 ? 0 : 1, pin: gsi & 7 });
    out.push({ gsi, irqchip: 2, pin: gsi });
  }
  return out;
}
