// e1000e through the PCI layer (VfioPciDevice on SystemAddressSpaces): the emulated MSI-X table over BAR 3 and
// the mapped rest. What vfio-pci itself exposes of BAR 3 is test/hil/e1000e-msix.test.ts's.
import { barRanges, describePci, enableDecode, type LabDevice, openLab, placeBar } from './lab';

describePci('e1000e', 'e1000e on real vfio-pci', (bdfOf) => {
  let lab: LabDevice;
  const bar3 = 0xfebf0000;
  beforeAll(() => {
    lab = openLab(bdfOf());
    placeBar(lab.dev, 0, 0xfea00000);
    placeBar(lab.dev, 1, 0xfea20000);
    placeBar(lab.dev, 3, bar3);
    enableDecode(lab.dev);
  });
  afterAll(() => lab?.close());

  it('finds MSI-X in BAR 3 and overlays the table at its start', () => {
    const msix = lab.dev.msix;
    expect(msix).not.toBeNull();
    expect(msix?.tableBar).toBe(3);
    expect(msix?.tableOffset).toBe(0);
    const bdf = bdfOf();
    const size = lab.dev.bars[3]?.size ?? 0;
    const tableEnd = (msix?.entries ?? 0) * 16;
    expect(barRanges(lab.dev, 3)).toEqual([
      [0, tableEnd, 'msix-table', 'emulated'],
      [tableEnd, 0x1000 - tableEnd, `${bdf} BAR 3 mmaps[0]`, 'trapped-mmap'],
      [0x1000, size - 0x1000, `${bdf} BAR 3 mmaps[0]`, 'direct'],
    ]);
  });

  it('keeps the guest vector in the emulated table, away from the device', () => {
    const before = lab.vfio.read(3, 0x18, 4);
    lab.bus.mmioWrite(bar3 + 0x10, 8, 0xfee01000n);
    lab.bus.mmioWrite(bar3 + 0x18, 4, 0x4041);
    lab.bus.mmioWrite(bar3 + 0x1c, 4, 0);
    expect(lab.dev.msix?.vector(1)).toEqual({ index: 1, address: 0xfee01000n, data: 0x4041, masked: false });
    expect(lab.bus.mmioRead(bar3 + 0x18, 4)).toBe(0x4041);
    expect(lab.vfio.read(3, 0x18, 4)).toBe(before);
  });

  it('reads the trapped rest of the first page through the mapping', () => {
    const bdf = bdfOf();
    const tableEnd = (lab.dev.msix?.entries ?? 0) * 16;
    // 0x100 lies in the trapped-mmap piece left over by the table overlay.
    expect(tableEnd).toBeLessThanOrEqual(0x100);
    expect(barRanges(lab.dev, 3)).toContainEqual([
      tableEnd,
      0x1000 - tableEnd,
      `${bdf} BAR 3 mmaps[0]`,
      'trapped-mmap',
    ]);
    const unassigned = lab.bus.memory.unassignedCount;
    expect(lab.bus.mmioRead(bar3 + 0x100, 4)).toBe(lab.vfio.read(3, 0x100, 4));
    expect(lab.dev.dump(3, 0x100, 0x20, { width: 4 }).split('\n')).toHaveLength(2);
    // Every access above reached the device: none was unassigned or refused.
    expect(lab.bus.memory.unassignedCount).toBe(unassigned);
  });

  it('maps BAR 0 (the register file) directly', () => {
    const bdf = bdfOf();
    expect(barRanges(lab.dev, 0)).toEqual([[0, 0x20000, `${bdf} BAR 0 mmaps[0]`, 'direct']]);
    // STATUS (0x8) read through dispatch matches a pread of the register.
    expect(lab.bus.mmioRead(0xfea00008, 4)).toBe(lab.vfio.read(0, 8, 4));
  });
});

describePci('e1000e', 'narrow loads come back no wider than asked', (bdf) => {
  // Under the lab's TCG a 1-byte MMIO load of BAR0 left stale bits above the byte (0x140241 for
  // 0x41); a value must fit its width on every path, whatever the CPU leaves in the register.
  test('read8/read16 of BAR0 through the mapping and through dispatch equal a pread of that width', () => {
    const lab = openLab(bdf());
    try {
      const base = 0xfe120000;
      placeBar(lab.dev, 0, base);
      enableDecode(lab.dev);
      const m = lab.dev.bars[0]!.mmaps[0]!.memory;
      for (let off = 0; off < 16; off++) {
        const byte = lab.vfio.read(0, off, 1);
        expect([off, m.read8(off)]).toEqual([off, byte]);
        expect([off, lab.bus.memory.read(base + off, 1)]).toEqual([off, byte]);
        if (off % 2 === 0) {
          const word = lab.vfio.read(0, off, 2);
          expect([off, m.read16(off)]).toEqual([off, word]);
          expect([off, lab.bus.memory.read(base + off, 2)]).toEqual([off, word]);
        }
      }
      // An odd length is split into aligned pieces and still fits its three bytes.
      const three = lab.bus.memory.read(base + 1, 3) as number;
      expect(three).toBeLessThan(2 ** 24);
      expect(three).toBe((lab.vfio.read(0, 1, 1) as number) + (lab.vfio.read(0, 2, 2) as number) * 256);
    } finally {
      lab.close();
    }
  });
});
