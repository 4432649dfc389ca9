// PcMachine's reports on the guest-error sink: the machine's own reports (a refused IRQ line, a
// device without reset, a failed thread-served access) go to the sink with their fields, the
// counts by PcReport kind are read off the sink, and the deprecated `report` event is each guest
// error turned back into its PcReport, subscribed only while it has listeners.
import { EventEmitter } from 'node:events';

import { GuestErrorSink, type GuestError } from '../../../lib/base';
import { AddressSpace, MemoryRegion } from '../../../lib/memory';
import type { PcReport } from '../../../lib/vmm';
import { PcReports } from '../../../lib/vmm/pc-reports';

function setup() {
  const sink = new GuestErrorSink({ log: null });
  const pc = new EventEmitter();
  const reports = new PcReports(pc, sink, 'pci-io');
  const seen: GuestError[] = [];
  sink.on('guest-error', (e) => seen.push(e));
  return { sink, pc, reports, seen };
}

test("the machine's own reports reach the sink once each, with their fields", () => {
  const { reports, seen } = setup();
  const error = new Error('KVM_IRQ_LINE: EINVAL');
  reports.report({ kind: 'irq-line', irq: 4, error });
  reports.report({ kind: 'reset', bdf: '0000:00:03.0', error });
  reports.report({
    kind: 'access',
    vcpu: 1,
    space: 'mmio',
    address: 0xfe000000,
    size: 4,
    isWrite: false,
    code: 'SIGBUS',
  });
  expect(seen).toEqual([
    expect.objectContaining({
      source: 'kvm',
      kind: 'irq-line-failed',
      where: 'IRQ 4',
      action: 'ignored',
      error,
    }),
    expect.objectContaining({
      source: 'vmm',
      kind: 'reset-missing',
      device: '0000:00:03.0',
      action: 'state-only',
    }),
    expect.objectContaining({
      source: 'vmm',
      kind: 'thread-access-failed',
      where: 'mmio',
      address: 0xfe000000,
      width: 4,
      write: false,
      action: 'read-all-ones',
    }),
  ]);
});

test('the counts by PcReport kind come from the sink, whichever layer reported', () => {
  const { sink, reports } = setup();
  const space = new AddressSpace('pci-io', MemoryRegion.container('io', 0x10000), { guestErrors: sink });
  space.read(0x80, 1);
  space.write(0x80, 1, 0);
  sink.report({ source: 'pci', kind: 'fd-error', action: 'dropped', message: 'x' });
  sink.report({ source: 'kvm', kind: 'unserved-exit', action: 'read-all-ones', message: 'not a PcReport' });
  reports.report({ kind: 'irq-line', irq: 4, error: new Error('e') });
  expect(reports.counts).toEqual({
    device: 1,
    unassigned: 2,
    interrupt: 0,
    'irq-line': 1,
    reset: 0,
    dma: 0,
    access: 0,
  });
  space.close();
});

test("the deprecated 'report' event rebuilds each PcReport, and listens to the sink only while heard", () => {
  const { sink, pc } = setup();
  const space = new AddressSpace('pci-io', MemoryRegion.container('io', 0x10000), { guestErrors: sink });
  const before = sink.listenerCount('guest-error');
  const got: PcReport[] = [];
  const fn = (r: PcReport): void => void got.push(r);
  pc.on('report', fn);
  expect(sink.listenerCount('guest-error')).toBe(before + 1);
  space.read(0x80, 2);
  expect(got).toEqual([
    {
      kind: 'unassigned',
      space: 'io',
      access: { addr: 0x80, size: 2, isWrite: false, reason: 'unassigned' },
    },
  ]);
  pc.off('report', fn);
  expect(sink.listenerCount('guest-error')).toBe(before);
  space.close();
});
