// edu through the PCI layer (VfioPciDevice on SystemAddressSpaces): how its BAR is laid out and how guest
// accesses reach it. The device fd and mapping widths underneath are test/hil/edu-widths.test.ts's.
import { barRanges, describePci, useLab } from './lab';

describePci('edu', 'edu on real vfio-pci', (bdfOf) => {
  const base = 0xfe000000;
  const lab = useLab(bdfOf, { 0: base });

  it('maps the whole 1 MiB BAR 0 directly', () => {
    const bdf = bdfOf();
    expect(lab.dev.bars[0]?.mmaps).toHaveLength(1);
    expect(barRanges(lab.dev, 0)).toEqual([[0, 0x100000, `${bdf} BAR 0 mmaps[0]`, 'direct']]);
  });

  // An access to a BAR the kernel revoked is a guest error: guest-errors.test.ts has it.

  it('reads the identification register at 4 bytes through dispatch', () => {
    expect(lab.bus.mmioRead(base, 4)).toBe(0x010000ed);
  });

  it('keeps the width: edu answers all-ones to an 8-byte read below 0x80', () => {
    // Split into two 4-byte reads, this would show the identification register.
    expect(lab.bus.mmioRead(base, 8)).toBe(0xffffffffffffffffn);
  });

  it('inverts the liveness register', () => {
    lab.bus.mmioWrite(base + 4, 4, 0x12345678);
    expect(lab.bus.mmioRead(base + 4, 4)).toBe(0xedcba987);
  });

  it('moves 8-byte DMA registers as single qwords', () => {
    lab.bus.mmioWrite(base + 0x80, 8, 0x1122334455667788n);
    expect(lab.bus.mmioRead(base + 0x80, 8)).toBe(0x1122334455667788n);
    expect(lab.bus.mmioRead(base + 0x80, 4)).toBe(0x55667788);
  });

  it('dumps the registers through the same path', () => {
    expect(lab.dev.dump(0, 0, 8, { width: 4 })).toMatch(/^00000000fe000000: 0x010000ed 0x[0-9a-f]{8}$/);
  });
});
