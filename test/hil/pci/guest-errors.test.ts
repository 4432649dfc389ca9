// What a guest does wrong to a real vfio-pci device, each situation arriving once on the one
// guest-error channel (the bus's sink, which the device shares) with its fields: an access to a
// BAR whose decode the kernel turned off, an access where nothing is, a configuration write where
// the device has no register, and MSI-X table accesses of a width the table does not take.
import {
  type GuestError,
  type GuestErrorSink,
  VFIO_PCI_CONFIG_REGION_INDEX,
  type VfioError,
} from '../../../lib';
import { describePci, useLab } from './lab';

/** What `sink` reports while `fn` runs, every report (a listener sees them all). */
function during(sink: GuestErrorSink, fn: () => void): GuestError[] {
  const seen: GuestError[] = [];
  const listener = (e: GuestError): void => void seen.push(e);
  sink.on('guest-error', listener);
  try {
    fn();
  } finally {
    sink.off('guest-error', listener);
  }
  return seen;
}

describePci('edu', 'guest errors on edu', (bdfOf) => {
  const base = 0xfe000000;
  const lab = useLab(bdfOf, { 0: base });

  it("reports on the bus's sink, which the device shares", () => {
    expect(lab.dev.guestErrors).toBe(lab.bus.guestErrors);
    expect(lab.bus.memory.guestErrors).toBe(lab.bus.guestErrors);
  });

  it('an access to a BAR with decode off behind its back: memory/bar-fault, once per access', () => {
    const sink = lab.bus.guestErrors;
    const cmd = lab.vfio.read(VFIO_PCI_CONFIG_REGION_INDEX, 4, 2) as number;
    const before = sink.count('memory', 'bar-fault');
    let seen: GuestError[];
    try {
      lab.vfio.write(VFIO_PCI_CONFIG_REGION_INDEX, 4, 2, cmd & ~0x2);
      seen = during(sink, () => {
        expect(lab.bus.mmioRead(base, 4)).toBe(0xffffffff);
        lab.bus.mmioWrite(base + 4, 4, 0x11111111);
      });
    } finally {
      lab.vfio.write(VFIO_PCI_CONFIG_REGION_INDEX, 4, 2, cmd);
    }
    const region = `${bdfOf()} BAR 0 mmaps[0]`;
    expect(seen).toEqual([
      expect.objectContaining({
        source: 'memory',
        kind: 'bar-fault',
        where: 'pci-memory',
        address: base,
        width: 4,
        write: false,
        action: 'read-all-ones',
        hint: expect.stringMatching(/decode off/),
        detail: expect.objectContaining({ reason: 'fault', region }),
      }),
      expect.objectContaining({
        source: 'memory',
        kind: 'bar-fault',
        address: base + 4,
        width: 4,
        write: true,
        action: 'dropped',
      }),
    ]);
    expect(seen.map((e) => (e.error as VfioError).code)).toEqual(['SIGBUS', 'SIGBUS']);
    expect(sink.count('memory', 'bar-fault')).toBe(before + 2);
    expect(lab.bus.mmioRead(base, 4)).toBe(0x010000ed);
  });

  it('an access where nothing is: memory/unassigned, once', () => {
    const sink = lab.bus.guestErrors;
    const at = base + 0x100000; // just past edu's 1 MiB BAR 0
    const seen = during(sink, () => expect(lab.bus.mmioRead(at, 4)).toBe(0xffffffff));
    expect(seen).toEqual([
      expect.objectContaining({
        source: 'memory',
        kind: 'unassigned',
        where: 'pci-memory',
        address: at,
        width: 4,
        write: false,
        action: 'read-all-ones',
        detail: { addr: at, size: 4, isWrite: false, reason: 'unassigned' },
      }),
    ]);
  });

  it('a configuration write where edu has no register: pci/config-unimplemented, once, passed on', () => {
    const sink = lab.dev.guestErrors;
    const caps = lab.dev.capabilities.filter((c) => !c.extended).map((c) => c.offset);
    // A dword of the standard space past the header that no capability's first 0x20 bytes cover.
    const free = [...Array(0x30).keys()]
      .map((i) => 0x40 + 4 * i)
      .find((o) => !caps.some((c) => o + 4 > c && o < c + 0x20))!;
    const seen = during(sink, () => lab.dev.configWrite(free, 2, 0x1234));
    expect(seen).toEqual([
      expect.objectContaining({
        source: 'pci',
        kind: 'config-unimplemented',
        device: bdfOf(),
        where: 'config',
        address: free,
        width: 2,
        write: true,
        value: 0x1234,
        action: 'passed-on',
      }),
    ]);
  });
});

describePci('e1000e', 'guest errors on e1000e', (bdfOf) => {
  const bar3 = 0xfebf0000;
  const lab = useLab(bdfOf, { 3: bar3 });

  it('MSI-X table accesses of 1 or 2 bytes: memory/access-invalid-size in msix-table, once each', () => {
    expect(lab.dev.msix?.tableBar).toBe(3);
    const sink = lab.bus.guestErrors;
    const entry = lab.bus.mmioRead(bar3 + 8, 4);
    const seen = during(sink, () => {
      expect(lab.bus.mmioRead(bar3 + 8, 2)).toBe(0xffff);
      lab.bus.mmioWrite(bar3 + 9, 1, 0x5a);
    });
    expect(seen).toEqual([
      expect.objectContaining({
        source: 'memory',
        kind: 'access-invalid-size',
        address: bar3 + 8,
        width: 2,
        write: false,
        action: 'read-all-ones',
        detail: expect.objectContaining({ reason: 'invalid-size', region: 'msix-table' }),
      }),
      expect.objectContaining({
        source: 'memory',
        kind: 'access-invalid-size',
        address: bar3 + 9,
        width: 1,
        write: true,
        action: 'dropped',
        detail: expect.objectContaining({ region: 'msix-table' }),
      }),
    ]);
    // The refused write left the emulated table as it was.
    expect(lab.bus.mmioRead(bar3 + 8, 4)).toBe(entry);
  });
});
