// A Machine's one guest-error sink, on memfd guest RAM (no VFIO needed): handed to the bus, both
// address spaces and the devices to come, heard as the machine's own `guest-error` event, and the
// only place the log options go.
import { GuestErrorSink, Machine, type GuestError } from '../../lib';

const MiB = 2 ** 20;

test('the machine makes one sink and hands it down; its event hears every layer', () => {
  using m = Machine.create({
    ramSize: 4 * MiB,
    pciHole: { start: 4 * MiB, size: 2 ** 32 - 4 * MiB },
    log: null,
  });
  expect(m.bus.guestErrors).toBe(m.guestErrors);
  expect(m.bus.memory.guestErrors).toBe(m.guestErrors);
  expect(m.bus.io.guestErrors).toBe(m.guestErrors);
  const seen: GuestError[] = [];
  m.on('guest-error', (e) => seen.push(e));
  m.bus.mmioRead(0x1000_0000, 4); // in the PCI hole, where nothing is placed
  m.bus.pioWrite(0x2000, 1, 0x5a);
  expect(seen.map((e) => [e.source, e.kind, e.where, e.address, e.write])).toEqual([
    ['memory', 'unassigned', 'pci-memory', 0x1000_0000, false],
    ['memory', 'unassigned', 'pci-io', 0x2000, true],
  ]);
  expect(m.guestErrors.counts).toEqual({ 'memory/unassigned': 2 });
});

test("a sink of the caller's own is used as given; log options go to the sink, not to its parts", () => {
  const sink = new GuestErrorSink({ log: null });
  using m = Machine.create({
    ramSize: 4 * MiB,
    pciHole: { start: 4 * MiB, size: 2 ** 32 - 4 * MiB },
    guestErrors: sink,
  });
  expect(m.guestErrors).toBe(sink);
  expect(() => Machine.create({ ramSize: 4 * MiB, guestErrors: sink, log: null })).toThrow(TypeError);
  expect(() => Machine.create({ ramSize: 4 * MiB, dma: { log: null } as never })).toThrow(TypeError);
});
