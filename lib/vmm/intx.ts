import { ArgRangeError } from '../base/error';
import { IOAPIC_PINS } from '../kvm/irqchip-routes';
import type { PciRootBus } from './pci-root-bus';

// KVM's facts, shared rather than restated: the IOAPIC's pin count, and the default routing that the
// interrupt tables built here (ISA IRQ n on IOAPIC pin n, PCI INTx on pins 16-23) assume.
export { defaultIrqchipRoutes, IOAPIC_PINS } from '../kvm/irqchip-routes';
/** The first IOAPIC pin left for PCI INTx; 0-15 are the ISA IRQs. */
export const PCI_INTX_GSI_BASE = 16;
const PCI_INTX_LINES = IOAPIC_PINS - PCI_INTX_GSI_BASE;

/** One PCI function's INTx pin and the IOAPIC input (GSI) it is wired to. */
export interface IntxRoute {
  /** Device number of the function on bus 0. */
  readonly slot: number;
  /** Function number, 0 to 7. */
  readonly fn: number;
  /** 1 = INTA … 4 = INTD, as the interrupt pin register says. */
  readonly pin: number;
  /** The IOAPIC input the pin is wired to (16 to 23 with {@link pciIntxGsi}). */
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
    throw new ArgRangeError(`PCI slot ${String(slot)} is out of range 0..31`);
  if (!Number.isInteger(pin) || pin < 1 || pin > 4)
    throw new ArgRangeError(`INTx pin ${String(pin)} is out of range 1..4`);
  return PCI_INTX_GSI_BASE + ((slot + pin - 1) % PCI_INTX_LINES);
}

/**
 * pciIntxRoutes: the INTx route of every function on the host bridge that has an interrupt pin,
 * read from its interrupt pin register (0x3d), in devfn order.
 */
export function pciIntxRoutes(
  host: PciRootBus,
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
