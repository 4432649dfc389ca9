import * as lib from '../../../lib';
import * as kvm from '../../../lib/kvm';
import { encodeRouting } from '../../../lib/kvm/uapi';
import * as vmm from '../../../lib/vmm';

describe('defaultIrqchipRoutes', () => {
  it("is KVM's default table: GSI n on IOAPIC pin n, GSIs 0-15 also on the PICs", () => {
    const r = kvm.defaultIrqchipRoutes();
    expect(r).toHaveLength(24 + 16);
    expect(r.every((e) => e.kind === 'irqchip')).toBe(true);
    expect(r.filter((e) => e.irqchip === 2)).toEqual(
      Array.from({ length: vmm.IOAPIC_PINS }, (_, gsi) => ({ gsi, kind: 'irqchip', irqchip: 2, pin: gsi })),
    );
    expect(r).toContainEqual({ gsi: 4, kind: 'irqchip', irqchip: 0, pin: 4 });
    expect(r).toContainEqual({ gsi: 12, kind: 'irqchip', irqchip: 1, pin: 4 });
    expect(r.some((e) => e.gsi >= 16 && e.irqchip !== 2)).toBe(false);
    // Fresh on each call: MsiRoutes appends its MSI routes to the array it gets.
    expect(kvm.defaultIrqchipRoutes()).not.toBe(r);
  });

  it('is one function, whether taken from lib/kvm, lib/vmm or the package', () => {
    expect(vmm.defaultIrqchipRoutes).toBe(kvm.defaultIrqchipRoutes);
    expect(lib.defaultIrqchipRoutes).toBe(kvm.defaultIrqchipRoutes);
    expect(lib.IOAPIC_PINS).toBe(vmm.IOAPIC_PINS);
  });

  it('encodes as KVM_SET_GSI_ROUTING entries: irqchip type, then irqchip and pin', () => {
    const b = encodeRouting(kvm.defaultIrqchipRoutes());
    expect(b.readUInt32LE(0)).toBe(40);
    // Entry 9 is GSI 4 on the IOAPIC (each GSI below 16 has its PIC entry first).
    const o = 8 + 9 * 48;
    expect([
      b.readUInt32LE(o),
      b.readUInt32LE(o + 4),
      b.readUInt32LE(o + 16),
      b.readUInt32LE(o + 20),
    ]).toEqual([4, 1, 2, 4]);
  });
});
