import fc from 'fast-check';

import { dmaBufferOwner } from '../../../lib/dma/dma-buffers';
import { DmaListener } from '../../../lib/dma/listener';
import { AddressSpace, MemoryRegion, transaction, type FlatView } from '../../../lib/memory';
import { FakeContainer, FakeDeviceMemory, FakeError, FakeRam } from './fake-container';

const PAGE = 0x1000;
const ram = new FakeRam(0x100000);

/** The regions one scenario plays with: RAM at odd and even host offsets, BARs, an I/O region. */
function pool(): MemoryRegion[] {
  const r = (name: string, offset: number, size: number): MemoryRegion =>
    MemoryRegion.ram(name, size, ram.window(offset, size));
  const d = (name: string, size: number): MemoryRegion =>
    MemoryRegion.ramDevice(name, size, new FakeDeviceMemory(Math.max(size, PAGE)));
  return [
    r('ram0', 0, 0x10000),
    r('ram1', 0x10800, 0x3000),
    r('ram2', 0x20000, 0x800),
    r('ram3', 0x30000, 0x4000),
    d('bar0', 0x2000),
    d('bar1', 0x100),
    d('bar2', 0x1000),
    MemoryRegion.io('io0', 0x1000, { read: () => 0, write: () => undefined }),
  ];
}

type Op =
  | { t: 'add'; i: number; addr: number; prio: number }
  | { t: 'remove'; i: number }
  | { t: 'move'; i: number; addr: number }
  | { t: 'enable'; i: number; on: boolean }
  | { t: 'readonly'; i: number; on: boolean };

const idx = fc.nat({ max: 7 });
const addr = fc.nat({ max: 0x400 }).map((n) => n * 0x100);
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('add' as const), i: idx, addr, prio: fc.nat({ max: 2 }) }),
  fc.record({ t: fc.constant('remove' as const), i: idx }),
  fc.record({ t: fc.constant('move' as const), i: idx, addr }),
  fc.record({ t: fc.constant('enable' as const), i: idx, on: fc.boolean() }),
  fc.record({ t: fc.constant('readonly' as const), i: idx, on: fc.boolean() }),
);
/** One commit: a few ops, and maybe the k-th RAM map of the commit failing. */
const commit = fc.record({
  ops: fc.array(op, { minLength: 1, maxLength: 3 }),
  failAt: fc.option(fc.nat({ max: 3 })),
});

function apply(root: MemoryRegion, regions: MemoryRegion[], o: Op): void {
  const r = regions[o.i];
  switch (o.t) {
    case 'add':
      if (r.parent === null) root.addSubregion(r, o.addr, o.prio);
      break;
    case 'remove':
      if (r.parent !== null) root.removeSubregion(r);
      break;
    case 'move':
      r.setOffset(o.addr);
      break;
    case 'enable':
      r.setEnabled(o.on);
      break;
    case 'readonly':
      r.setReadonly(o.on);
      break;
  }
}

/** The mappings QEMU's rules give for a flat view, computed directly from it. */
function expected(fv: FlatView): [number, number, number, boolean][] {
  const out: [number, number, number, boolean][] = [];
  for (const s of fv.ranges) {
    const end = s.addr + s.size;
    if (s.kind === 'ram') {
      const host = dmaBufferOwner(s.region.backing!)!.offset + s.offsetInRegion;
      if (s.addr % PAGE !== host % PAGE) continue;
      const lo = Math.ceil(s.addr / PAGE) * PAGE;
      const hi = Math.floor(end / PAGE) * PAGE;
      if (lo < hi) out.push([lo, hi - lo, host + (lo - s.addr), !s.readonly]);
    } else if (s.kind === 'ram-device') {
      if (s.addr % PAGE === 0 && s.size % PAGE === 0 && s.offsetInRegion % PAGE === 0) {
        out.push([s.addr, s.size, s.offsetInRegion, !s.readonly]);
      }
    }
  }
  return out;
}

describe('DmaListener property', () => {
  it('keeps the IOMMU equal to the mappable sections of the flat view, or as it was when a commit fails', () => {
    fc.assert(
      fc.property(fc.array(commit, { minLength: 1, maxLength: 25 }), (commits) => {
        const c = new FakeContainer();
        const root = MemoryRegion.container('system', 2 ** 32);
        const as = new AddressSpace('memory', root, { log: null });
        const l = new DmaListener(c, as, { log: null });
        const regions = pool();
        try {
          for (const { ops, failAt } of commits) {
            let countdown = failAt === null ? -1 : failAt;
            c.failMap = (req) =>
              req.memory === ram && countdown-- === 0 ? new FakeError('ENOMEM', 'injected') : undefined;
            const before = c.state();
            const fatals = l.stats.fatalCount;
            transaction(() => {
              for (const o of ops) apply(root, regions, o);
            });
            if (l.stats.fatalCount > fatals) {
              // Undone: exactly as before the commit.
              expect(c.state()).toEqual(before);
              expect(l.lastFatal!.rollbackErrors).toEqual([]);
            } else if (l.pending) {
              // An undone commit is still owed and this one did not change the flat view.
              expect(c.state()).toEqual(before);
            } else {
              expect(c.state()).toEqual(expected(as.flatView));
              expect(l.mappings().map((m) => [m.iova, m.size, !m.readonly])).toEqual(
                c.state().map(([i, sz, , w]) => [i, sz, w]),
              );
            }
            expect(l.stats.mappingCount).toBe(c.maps.length);
            expect(l.stats.dmaErrorCount).toBe(0);
          }
          // With nothing failing, the next commit catches up with whatever was undone.
          c.failMap = null;
          root.addSubregion(
            MemoryRegion.io('touch', 0x100, { read: () => 0, write: () => undefined }),
            0xf000_0000,
          );
          expect(l.pending).toBe(false);
          expect(c.state()).toEqual(expected(as.flatView));
          l.close();
          expect(c.maps).toEqual([]);
          // Every unmap was exactly one or more whole live mappings.
          expect(c.inexactUnmaps).toEqual([]);
        } finally {
          l.close();
          as.close();
        }
      }),
      { numRuns: 300 },
    );
  });
});
