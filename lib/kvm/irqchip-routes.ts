/**
 * KVM's default GSI routing for the in-kernel irqchip: a KVM fact that both MsiRoutes and a VMM's
 * interrupt tables (lib/vmm) depend on. Pure data, no addon, so lib/vmm can share it.
 */
import type { GsiRoute } from './uapi';

/** Pins of KVM's in-kernel IOAPIC (KVM_IOAPIC_NUM_PINS). */
export const IOAPIC_PINS = 24;

/** KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC. */
const PIC_MASTER = 0;
const PIC_SLAVE = 1;
const IOAPIC = 2;

/**
 * defaultIrqchipRoutes: the routes KVM sets up with its in-kernel irqchip (virt/kvm/irqchip.c's
 * default table): GSI n to IOAPIC pin n, and GSIs 0-15 also to the PICs. KVM_SET_GSI_ROUTING
 * replaces the whole table, so whoever adds MSI routes must send these with them, or the timer, the
 * UART and INTx stop arriving; interrupt tables that put ISA IRQ n on IOAPIC pin n assume them.
 */
export function defaultIrqchipRoutes(): Extract<GsiRoute, { kind: 'irqchip' }>[] {
  const out: Extract<GsiRoute, { kind: 'irqchip' }>[] = [];
  for (let gsi = 0; gsi < IOAPIC_PINS; gsi++) {
    if (gsi < 16) out.push({ gsi, kind: 'irqchip', irqchip: gsi < 8 ? PIC_MASTER : PIC_SLAVE, pin: gsi % 8 });
    out.push({ gsi, kind: 'irqchip', irqchip: IOAPIC, pin: gsi });
  }
  return out;
}
