import { PciBus, VfioPciDevice, type VfioPciDeviceOptions } from '../../../lib/pci';
import { Container, Group } from '../../../lib/vfio';
import { bdfOf, inCi, missingReason, ROLES, type Role } from '../hil';
import { enableDecode, placeBar } from './lab';
import { parseFlatView, QemuReference } from './qemu-reference';

/** The lab devices, their slot in QEMU's q35 and where both sides place their BARs. */
const LAYOUT: {
  role: Role;
  slot: number;
  bars: Record<number, number>;
  opts?: VfioPciDeviceOptions;
  props?: string;
}[] = [
  { role: 'edu', slot: 3, bars: { 0: 0xfe000000 } },
  { role: 'rtl8139', slot: 4, bars: { 0: 0xc000, 1: 0xfebf1000 } },
  { role: 'e1000e', slot: 5, bars: { 0: 0xfea00000, 1: 0xfea20000, 2: 0xc100, 3: 0xfebf0000 } },
  {
    role: 'ivshmem',
    slot: 6,
    bars: { 0: 0xfebf2000, 2: 0x8_0000_0000 },
    opts: { vendorId: 0x10ec, deviceId: 0x8168 },
    props: 'x-pci-vendor-id=0x10ec,x-pci-device-id=0x8168',
  },
];

type Row = [
  role: string,
  bar: number,
  offset: number,
  size: number,
  kind: string,
  name: string,
  offsetInRegion: number,
  priority: number,
];

const KIND: Record<string, string> = { 'ram-device': 'ramd', io: 'i/o', ram: 'ram' };

/** One flat range, as both sides describe it. */
interface Span {
  start: number;
  size: number;
  kind: string;
  name: string;
  offsetInRegion: number;
  priority: number;
}

/** The rows of `ranges` that start inside one of the BAR windows of `space`. */
function rows(windows: Window[], space: 'memory' | 'io', ranges: Span[]): Row[] {
  const out: Row[] = [];
  for (const w of windows.filter((x) => x.space === space)) {
    for (const r of ranges) {
      if (r.start < w.base || r.start >= w.base + w.size) continue;
      out.push([w.role, w.bar, r.start - w.base, r.size, r.kind, r.name, r.offsetInRegion, r.priority]);
    }
  }
  return out;
}

interface Window {
  role: string;
  bar: number;
  space: 'memory' | 'io';
  base: number;
  size: number;
}

const missing = ROLES.map(missingReason).find((r) => r !== null) ?? null;
const describeAll = missing === null || inCi ? describe : describe.skip;

describeAll(
  `acceptance: the flat view equals QEMU 7.2's own vfio-pci${missing && !inCi ? ` (skipped: ${missing})` : ''}`,
  () => {
    it('matches `info mtree -f` for every BAR of every lab device', async () => {
      // Our side: every device on one bus, BARs programmed through config space.
      const windows: Window[] = [];
      const ours: Row[] = [];
      const container = Container.open();
      const groups: Group[] = [];
      const bus = new PciBus();
      try {
        for (const l of LAYOUT) {
          const bdf = bdfOf(l.role);
          const group = Group.openByBdf(bdf);
          groups.push(group);
          group.setContainer(container);
          if (groups.length === 1) container.setIommu();
          const dev = VfioPciDevice.open(bus, group.openDevice(bdf), l.opts ?? {});
          for (const [bar, addr] of Object.entries(l.bars)) placeBar(dev, Number(bar), addr);
          enableDecode(dev);
          for (const [bar, addr] of Object.entries(l.bars)) {
            const b = dev.bars[Number(bar)];
            if (!b) throw new Error(`${l.role} has no BAR ${bar}`);
            windows.push({
              role: l.role,
              bar: Number(bar),
              space: b.type === 'io' ? 'io' : 'memory',
              base: addr,
              size: b.base.size,
            });
          }
        }
        for (const space of ['memory', 'io'] as const) {
          const spans = bus.space(space).flatView.ranges.map((r) => ({
            start: r.addr,
            size: r.size,
            kind: KIND[r.kind] ?? r.kind,
            name: r.region.name,
            offsetInRegion: r.offsetInRegion,
            priority: r.region.priority,
          }));
          ours.push(...rows(windows, space, spans));
        }
      } finally {
        // Everything is released before QEMU opens the same groups.
        bus.close();
        for (const g of groups) g.close();
        container.close();
      }

      // QEMU's side: the same devices, the same BARs, programmed with config cycles.
      const qemu = await QemuReference.start(
        LAYOUT.map(
          (l) => `host=${bdfOf(l.role)},addr=0x${l.slot.toString(16)}.0${l.props ? `,${l.props}` : ''}`,
        ),
      );
      let text: string;
      try {
        for (const l of LAYOUT) {
          for (const [bar, addr] of Object.entries(l.bars)) {
            const w = windows.find((x) => x.role === l.role && x.bar === Number(bar));
            const reg = 0x10 + 4 * Number(bar);
            await qemu.configWrite(l.slot, reg, 4, (addr % 2 ** 32) | (w?.space === 'io' ? 1 : 0));
            if (addr >= 2 ** 32) await qemu.configWrite(l.slot, reg + 4, 4, Math.floor(addr / 2 ** 32));
          }
          await qemu.configWrite(l.slot, 0x04, 2, 0x0007);
        }
        text = await qemu.infoMtreeFlat();
      } finally {
        await qemu.stop();
      }
      const theirs: Row[] = [];
      for (const [space, as] of [
        ['memory', 'memory'],
        ['io', 'I/O'],
      ] as const) {
        const spans = parseFlatView(text, as).map((q) => ({
          start: q.start,
          size: q.end - q.start + 1,
          kind: q.kind,
          name: q.name,
          offsetInRegion: q.offsetInRegion,
          priority: q.priority,
        }));
        theirs.push(...rows(windows, space, spans));
      }
      expect(theirs.length).toBeGreaterThan(0);
      expect(ours).toEqual(theirs);
    });
  },
);
