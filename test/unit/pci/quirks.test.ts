// The RTL8168 window quirk (quirks.ts) on a device that has it, or is presented as one.
import type { DeviceErrorEvent } from '../../../lib/pci';
import type { FakeDeviceSpec } from '../../support/fake-device';
import { enableDecode, ivshmemSpec, openFake, placeBar } from '../../support/pci-helpers';

/** An RTL8168-like device: I/O BAR 0, the window in 64-bit BAR 2, MSI-X in 64-bit BAR 4. */
function rtl8168Spec(): FakeDeviceSpec {
  return {
    bdf: '0000:02:00.0',
    vendorId: 0x10ec,
    deviceId: 0x8168,
    bars: [
      { size: 0x100, type: 'io' },
      null,
      { size: 0x1000, type: 'mem64' },
      null,
      { size: 0x4000, type: 'mem64' },
    ],
    msix: { entries: 4, tableBar: 4, tableOffset: 0, pbaBar: 4, pbaOffset: 0x800 },
  };
}

describe('the RTL8168 window quirk', () => {
  it('passes non-table window accesses to the device at 4 bytes', () => {
    const { bus, fake, dev } = openFake(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168 });
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    fake.take();
    bus.mmioWrite(0xf0000070, 4, 0xdeadbeef);
    bus.mmioWrite(0xf0000074, 4, 0x00020000);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0xdeadbeef);
    expect(bus.mmioRead(0xf0000074, 4)).toBe(0x00020000);
    expect(fake.take()).toEqual([
      { via: 'fd', region: 2, offset: 0x70, size: 4, isWrite: true, value: 0xdeadbeef },
      { via: 'fd', region: 2, offset: 0x74, size: 4, isWrite: true, value: 0x00020000 },
      { via: 'fd', region: 2, offset: 0x70, size: 4, isWrite: false, value: 0xdeadbeef },
      { via: 'fd', region: 2, offset: 0x74, size: 4, isWrite: false, value: 0x00020000 },
    ]);
  });

  it('redirects window accesses that target the MSI-X table to the emulated table', () => {
    const { bus, fake, dev } = openFake(rtl8168Spec());
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    fake.take();
    // Write vector 1's data word (table offset 0x18) through the window.
    bus.mmioWrite(0xf0000070, 4, 0x4041);
    bus.mmioWrite(0xf0000074, 4, 0x80010018);
    expect(dev.msix?.vector(1).data).toBe(0x4041);
    // The data went to the device, the table write did not.
    expect(fake.take()).toEqual([
      { via: 'fd', region: 2, offset: 0x70, size: 4, isWrite: true, value: 0x4041 },
    ]);
    // Read it back: latch the address, then the data register returns the table word.
    bus.mmioWrite(0xf0000074, 4, 0x00010018);
    expect(bus.mmioRead(0xf0000074, 4)).toBe(0x80010018);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0x4041);
    // An index past the table is never redirected, and the flagged write never reaches the device.
    fake.take();
    bus.mmioWrite(0xf0000074, 4, 0x80010ff0);
    expect(dev.msix?.vectors().map((v) => v.data)).toEqual([0, 0x4041, 0, 0]);
    expect(fake.take()).toEqual([]);
  });

  it('refuses unaligned and out-of-table window accesses without throwing, and reports them', () => {
    const { bus, fake, dev } = openFake(rtl8168Spec(), { log: null });
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    bus.mmioWrite(0xf0000070, 4, 0x4041);
    fake.take();
    // A table write at an unaligned offset: dropped, and it never reaches the device either.
    expect(() => bus.mmioWrite(0xf0000074, 4, 0x80010002)).not.toThrow();
    expect(fake.take()).toEqual([]);
    expect(dev.msix?.vectors().map((v) => v.data)).toEqual([0, 0, 0, 0]);
    // A table read at an unaligned offset, and one past the table: QEMU 7.2 reads a refused table
    // access as 0, replacing what the device returned.
    bus.mmioWrite(0xf0000074, 4, 0x00010002);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0);
    bus.mmioWrite(0xf0000074, 4, 0x00010ff0);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0);
    // An index past the table is dropped the same way.
    bus.mmioWrite(0xf0000074, 4, 0x80010ff0);
    expect(dev.msix?.vectors().map((v) => v.data)).toEqual([0, 0, 0, 0]);
    expect(events).toEqual([
      { bdf: '0000:02:00.0', reason: 'msix-window', isWrite: true, where: 'msix-table', offset: 2, size: 4 },
      { bdf: '0000:02:00.0', reason: 'msix-window', isWrite: false, where: 'msix-table', offset: 2, size: 4 },
      {
        bdf: '0000:02:00.0',
        reason: 'msix-window',
        isWrite: false,
        where: 'msix-table',
        offset: 0xff0,
        size: 4,
      },
      {
        bdf: '0000:02:00.0',
        reason: 'msix-window',
        isWrite: true,
        where: 'msix-table',
        offset: 0xff0,
        size: 4,
      },
    ]);
    expect(dev.deviceErrorCount).toBe(4);
    expect(bus.memory.unassignedCount).toBe(0);
  });

  it('drops and reports window table writes on a device without MSI-X, and reads the device', () => {
    const { bus, fake, dev } = openFake(ivshmemSpec(), { vendorId: 0x10ec, deviceId: 0x8168, log: null });
    const events: DeviceErrorEvent[] = [];
    dev.on('device-error', (e) => events.push(e));
    placeBar(dev, 2, 0xf0000000);
    enableDecode(dev);
    bus.mmioWrite(0xf0000070, 4, 0x1234);
    fake.take();
    expect(() => bus.mmioWrite(0xf0000074, 4, 0x80010018)).not.toThrow();
    expect(() => bus.mmioWrite(0xf0000074, 4, 0x80010002)).not.toThrow();
    // The guest's vector never reaches the device.
    expect(fake.take()).toEqual([]);
    // With no table to redirect to, a latched table address reads the device, as QEMU does.
    bus.mmioWrite(0xf0000074, 4, 0x00010002);
    expect(bus.mmioRead(0xf0000070, 4)).toBe(0x1234);
    expect(events.map((e) => [e.reason, e.isWrite, e.offset])).toEqual([
      ['msix-window', true, 0x18],
      ['msix-window', true, 2],
    ]);
    expect(dev.deviceErrorCount).toBe(2);
  });
});
