import { closeSync, openSync, readSync } from 'node:fs';
import { GuestErrorSink, type GuestError } from '../../../lib';
import { barRanges, describePci, enableDecode, type LabDevice, openLab, placeBar } from './lab';

/** Reads `size` bytes at `offset` of the host's ivshmem backing file, little-endian. */
function hostRead(offset: number, size: 1 | 2 | 4): number {
  const file = process.env.VFIO_BRIDGE_HIL_IVSHMEM_FILE;
  if (!file) throw new Error('VFIO_BRIDGE_HIL_IVSHMEM_FILE is not set');
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(size);
    readSync(fd, buf, 0, size, offset);
    return buf.readUIntLE(0, size);
  } finally {
    closeSync(fd);
  }
}

describePci('ivshmem', 'ivshmem presented as an RTL8168', (bdfOf) => {
  let lab: LabDevice;
  // The device's own sink, quiet: what it reports is asserted through its event.
  const sink = new GuestErrorSink({ log: null });
  const base = 0x8_0000_0000;
  beforeAll(() => {
    lab = openLab(bdfOf(), { vendorId: 0x10ec, deviceId: 0x8168, guestErrors: sink });
    placeBar(lab.dev, 2, base);
    enableDecode(lab.dev);
  });
  afterAll(() => lab?.close());

  it('presents the overridden IDs', () => {
    expect(lab.dev.configRead(0, 2)).toBe(0x10ec);
    expect(lab.dev.configRead(2, 2)).toBe(0x8168);
    expect(lab.dev.physicalVendorId).toBe(0x1af4);
  });

  it("splits BAR 2's first page in three around the window quirk", () => {
    const bdf = bdfOf();
    const size = lab.dev.bars[2]?.size ?? 0;
    expect(barRanges(lab.dev, 2)).toEqual([
      [0, 0x70, `${bdf} BAR 2 mmaps[0]`, 'trapped-mmap'],
      [0x70, 4, 'vfio-rtl8168-window-data-quirk', 'emulated'],
      [0x74, 4, 'vfio-rtl8168-window-address-quirk', 'emulated'],
      [0x78, 0xf88, `${bdf} BAR 2 mmaps[0]`, 'trapped-mmap'],
      [0x1000, size - 0x1000, `${bdf} BAR 2 mmaps[0]`, 'direct'],
    ]);
  });

  it('reaches the shared memory from every piece at the access width', () => {
    lab.bus.mmioWrite(base + 0x10, 4, 0xa1b2c3d4);
    lab.bus.mmioWrite(base + 0x16, 2, 0xbeef);
    lab.bus.mmioWrite(base + 0x6f, 1, 0x5a);
    lab.bus.mmioWrite(base + 0x100, 4, 0x01020304);
    lab.bus.mmioWrite(base + 0x2000, 4, 0xcafef00d);
    expect(hostRead(0x10, 4)).toBe(0xa1b2c3d4);
    expect(hostRead(0x16, 2)).toBe(0xbeef);
    expect(hostRead(0x6f, 1)).toBe(0x5a);
    expect(hostRead(0x100, 4)).toBe(0x01020304);
    expect(hostRead(0x2000, 4)).toBe(0xcafef00d);
    expect(lab.bus.mmioRead(base + 0x100, 4)).toBe(0x01020304);
  });

  it('passes window accesses outside the MSI-X table through to the device', () => {
    lab.bus.mmioWrite(base + 0x70, 4, 0x11223344);
    lab.bus.mmioWrite(base + 0x74, 4, 0x00020000);
    expect(hostRead(0x70, 4)).toBe(0x11223344);
    expect(hostRead(0x74, 4)).toBe(0x00020000);
    expect(lab.bus.mmioRead(base + 0x70, 4)).toBe(0x11223344);
  });

  it('never forwards a window write aimed at the MSI-X table, and reports it once', () => {
    const events: GuestError[] = [];
    const onError = (e: GuestError): void => {
      events.push(e);
    };
    lab.dev.guestErrors.on('guest-error', onError);
    lab.bus.mmioWrite(base + 0x74, 4, 0x00020000);
    lab.bus.mmioWrite(base + 0x74, 4, 0x80010000);
    lab.dev.guestErrors.off('guest-error', onError);
    expect(hostRead(0x74, 4)).toBe(0x00020000);
    // ivshmem has no MSI-X table to redirect to, so the write is dropped and reported.
    expect(events).toEqual([
      expect.objectContaining({
        source: 'pci',
        kind: 'msix-window',
        device: bdfOf(),
        where: 'msix-table',
        address: 0,
        width: 4,
        write: true,
        action: 'dropped',
      }),
    ]);
    // The latched address reads back with bit 31 flipped, as the device reports completion.
    expect(lab.bus.mmioRead(base + 0x74, 4)).toBe(0x00010000);
  });
});
