// rtl8139 through the PCI layer (VfioPciDevice on SystemAddressSpaces): its I/O BAR in the I/O space and its
// sub-page MMIO BAR. The raw device fd and mapping are test/hil/rtl8139-bars.test.ts's.
import { barRanges, describePci, placeBar, useLab } from './lab';

describePci('rtl8139', 'rtl8139 on real vfio-pci', (bdfOf) => {
  const lab = useLab(bdfOf, { 0: 0xc000, 1: 0xfebf1000 });

  it('serves the I/O BAR 0 through the fd, in the I/O space', () => {
    const bdf = bdfOf();
    expect(lab.dev.bars[0]?.type).toBe('io');
    expect(lab.dev.mapinfo().filter((r) => r.space === 'io')).toEqual([
      expect.objectContaining({ addr: 0xc000, size: 0x100, name: `${bdf} BAR 0`, mapinfo: 'trapped-fd' }),
    ]);
    // The MAC address registers, byte by byte and as one dword, agree with the device.
    const bytes = [0, 1, 2, 3].map((i) => lab.bus.pioRead(0xc000 + i, 1) as number);
    const dword = lab.bus.pioRead(0xc000, 4) as number;
    expect(dword).toBe((bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24)) >>> 0);
    expect(dword).toBe(lab.vfio.read(0, 0, 4));
    expect(bytes.slice(0, 3)).toEqual([0x52, 0x54, 0x00]);
  });

  it('expands the 256-byte BAR 1 to the page when page-aligned, and shrinks it off alignment', () => {
    const bdf = bdfOf();
    const b1 = lab.dev.bars[1];
    if (!b1?.mmaps.length) {
      throw new Error(
        `the lab kernel did not allow mmap of ${bdf} BAR 1 (not page-aligned on the guest's bus): ${b1?.mmapError?.message ?? 'no MMAP flag'}`,
      );
    }
    expect(b1.size).toBe(0x100);
    expect(b1.expanded).toBe(true);
    expect(b1.base.priority).toBe(0);
    expect(barRanges(lab.dev, 1)).toEqual([[0, 0x1000, `${bdf} BAR 1 mmaps[0]`, 'direct']]);
    // BAR 1 mirrors the registers of BAR 0.
    expect(lab.bus.mmioRead(0xfebf1000, 4)).toBe(lab.bus.pioRead(0xc000, 4));
    placeBar(lab.dev, 1, 0xfebf1100);
    expect(b1.expanded).toBe(false);
    expect(b1.base.priority).toBe(1);
    expect(barRanges(lab.dev, 1)).toEqual([[0, 0x100, `${bdf} BAR 1 mmaps[0]`, 'trapped-mmap']]);
    expect(lab.bus.mmioRead(0xfebf1100, 2)).toBe((lab.bus.pioRead(0xc000, 2) as number) & 0xffff);
    placeBar(lab.dev, 1, 0xfebf1000);
    expect(b1.expanded).toBe(true);
  });
});
