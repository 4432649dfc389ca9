// e1000e: the MSI-X capability, its table and PBA in BAR3, and how vfio-pci exposes that BAR.
import { describeDevice, capabilities, CONFIG, openDevice, type Opened } from './hil';

const CAP_MSIX = 0x11;
const VFIO_PCI_MSIX_IRQ_INDEX = 2;

describeDevice('e1000e', 'MSI-X and the mmap areas', (bdf) => {
  let o: Opened;
  let msix: { tableBar: number; tableOffset: number; pbaBar: number; pbaOffset: number; vectors: number };
  beforeAll(() => {
    o = openDevice(bdf());
    const cap = capabilities(o.device).get(CAP_MSIX);
    if (cap === undefined) throw new Error('no MSI-X capability in config space');
    const control = o.device.read(CONFIG, cap + 2, 2) as number;
    const table = o.device.read(CONFIG, cap + 4, 4) as number;
    const pba = o.device.read(CONFIG, cap + 8, 4) as number;
    msix = {
      vectors: (control & 0x7ff) + 1,
      tableBar: table & 7,
      tableOffset: table & ~7,
      pbaBar: pba & 7,
      pbaOffset: pba & ~7,
    };
  });
  afterAll(() => o?.close());

  test('the MSI-X capability puts its table and PBA in BAR3', () => {
    expect(msix.tableBar).toBe(3);
    expect(msix.pbaBar).toBe(3);
    expect(msix.vectors).toBeGreaterThanOrEqual(1);
    const size = o.device.regionInfo(3).size;
    expect(size).toBe(16 * 1024);
    expect(msix.tableOffset + msix.vectors * 16).toBeLessThanOrEqual(size);
    expect(msix.pbaOffset).toBeLessThan(size);
  });

  test('the MSI-X IRQ index counts the table entries and takes eventfds', () => {
    const irq = o.device.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX);
    expect(irq.index).toBe(VFIO_PCI_MSIX_IRQ_INDEX);
    expect(irq.count).toBe(msix.vectors);
    expect(irq.eventfd).toBe(true);
  });

  test('BAR3 is mappable, and its capabilities describe where the table may be mapped', () => {
    const info = o.device.regionInfo(3);
    expect(info.mappable).toBe(true);
    const sparse = info.caps.find((c) => c.kind === 'sparse-mmap');
    const mappableTable = info.caps.some((c) => c.kind === 'msix-mappable');
    // Kernels since 4.16 map the whole BAR and say so; older ones list areas around the table.
    expect(mappableTable || sparse !== undefined).toBe(true);
    if (sparse?.kind === 'sparse-mmap') {
      const tableEnd = msix.tableOffset + msix.vectors * 16;
      for (const a of sparse.areas) {
        expect(a.offset + a.size <= msix.tableOffset || a.offset >= tableEnd).toBe(true);
      }
    }
  });

  test('through the mapping the table starts masked and the PBA is clear', () => {
    const m = o.device.map(3, 0, o.device.regionInfo(3).size);
    try {
      for (let v = 0; v < msix.vectors; v++) {
        expect(m.read32(msix.tableOffset + v * 16 + 12) & 1).toBe(1);
      }
      expect(m.read64(msix.pbaOffset)).toBe(0n);
    } finally {
      m.close();
    }
  });

  test('through the fd vfio-pci hides the table (reads ones, drops writes) but not the rest', () => {
    const ctl = msix.tableOffset + 12;
    expect(o.device.read(3, ctl, 4)).toBe(0xffffffff);
    o.device.write(3, ctl, 4, 0);
    const m = o.device.map(3, 0, o.device.regionInfo(3).size);
    try {
      expect(m.read32(ctl) & 1).toBe(1);
      expect(o.device.read(3, msix.pbaOffset, 4)).toBe(m.read32(msix.pbaOffset));
    } finally {
      m.close();
    }
  });

  test('reset() succeeds and leaves the device in D0 and accessible', () => {
    // The kernel resets this device through power management (D3hot and back). QEMU's model does
    // not clear its registers on that transition, so only the outcome the kernel owns is checked.
    expect(o.device.info().reset).toBe(true);
    const pm = capabilities(o.device).get(0x01);
    expect(pm).toBeDefined();
    o.device.reset();
    expect((o.device.read(CONFIG, (pm as number) + 4, 2) as number) & 3).toBe(0);
    const m = o.device.map(0, 0, 0x4000);
    try {
      expect(m.read32(0x08)).toBe(o.device.read(0, 0x08, 4));
    } finally {
      m.close();
    }
  });

  test('BAR0 (register space) maps and reads the device status through both paths', () => {
    const m = o.device.map(0, 0, 4096);
    try {
      // STATUS (0x08) is read-only; the two paths must agree on it.
      expect(m.read32(0x08)).toBe(o.device.read(0, 0x08, 4));
    } finally {
      m.close();
    }
  });
});
