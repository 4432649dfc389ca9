import { PciBus, VfioPciDevice, type VfioPciDeviceOptions } from '../../../lib/pci';
import { Container, type Device, Group } from '../../../lib/vfio';
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
  /** BARs that are I/O ports (their register carries bit 0). */
  io?: number[];
}[] = [
  { role: 'edu', slot: 3, bars: { 0: 0xfe000000 } },
  { role: 'rtl8139', slot: 4, bars: { 0: 0xc000, 1: 0xfe101000 }, io: [0] },
  { role: 'e1000e', slot: 5, bars: { 0: 0xfe120000, 1: 0xfe140000, 2: 0xc100, 3: 0xfe160000 }, io: [2] },
  {
    role: 'ivshmem',
    slot: 6,
    bars: { 0: 0xfe102000, 2: 0x8_0000_0000 },
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

/** The registers each lab device must hold in QEMU: [slot, register, value, role]. */
function wanted(): [slot: number, reg: number, value: number, role: string][] {
  const out: [number, number, number, string][] = [];
  for (const l of LAYOUT) {
    for (const [bar, addr] of Object.entries(l.bars)) {
      const reg = 0x10 + 4 * Number(bar);
      out.push([l.slot, reg, ((addr % 2 ** 32) | (l.io?.includes(Number(bar)) ? 1 : 0)) >>> 0, l.role]);
      if (addr >= 2 ** 32) out.push([l.slot, reg + 4, Math.floor(addr / 2 ** 32), l.role]);
    }
  }
  return out;
}

/**
 * Programs every BAR, then the command register, and reads everything back: a register that did not
 * take would make the comparison meaningless. A lost write is written again and reported.
 */
async function programQemu(qemu: QemuReference): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const stale: string[] = [];
    for (const [slot, reg, value, role] of wanted()) {
      if (round > 0) {
        const got = (await qemu.configRead(slot, reg)) >>> 0;
        // Compare the address bits only: the low bits hold the BAR's read-only type.
        if (((got ^ value) & ~0xf) >>> 0 === 0) continue;
        stale.push(`${role} reg 0x${reg.toString(16)} read 0x${got.toString(16)}`);
      }
      await qemu.configWrite(slot, reg, 4, value);
    }
    for (const l of LAYOUT) {
      if (round > 0) {
        if (((await qemu.configRead(l.slot, 0x04)) & 0x7) === 0x7) continue;
        stale.push(`${l.role} command`);
      }
      await qemu.configWrite(l.slot, 0x04, 2, 0x0007);
    }
    if (round > 0 && stale.length === 0) return;
    if (stale.length) console.log(`QEMU lost config writes, writing again: ${stale.join(', ')}`);
  }
  throw new Error('QEMU did not keep the BAR and command registers after 5 rounds');
}

const missing = ROLES.map(missingReason).find((r) => r !== null) ?? null;
const describeAll = missing === null || inCi ? describe : describe.skip;

describeAll(
  `acceptance: the flat view equals QEMU 7.2's own vfio-pci${missing && !inCi ? ` (skipped: ${missing})` : ''}`,
  () => {
    it('matches `info mtree -f` for every BAR of every lab device', async () => {
      // QEMU's side first, on devices nobody has opened yet: the same BARs, programmed with config cycles.
      const qemu = await QemuReference.start(
        LAYOUT.map(
          (l) =>
            `vfio-pci,host=${bdfOf(l.role)},addr=0x${l.slot.toString(16)}.0${l.props ? `,${l.props}` : ''}`,
        ),
      );
      let text: string;
      try {
        await programQemu(qemu);
        text = await qemu.infoMtreeFlat();
      } finally {
        await qemu.stop();
      }
      // Our side: every device on one bus, the same BARs programmed through config space.
      const windows: Window[] = [];
      const ours: Row[] = [];
      const container = Container.open();
      const groups: Group[] = [];
      const vfios: Device[] = [];
      const bus = new PciBus();
      try {
        for (const l of LAYOUT) {
          const bdf = bdfOf(l.role);
          const group = Group.openByBdf(bdf);
          groups.push(group);
          group.setContainer(container);
          if (groups.length === 1) container.setIommu();
          const vfio = group.openDevice(bdf);
          vfios.push(vfio);
          const dev = VfioPciDevice.open(bus, vfio, l.opts ?? {});
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
        for (const v of vfios) v.close();
        for (const g of groups) g.close();
        container.close();
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
      if (JSON.stringify(ours) !== JSON.stringify(theirs)) {
        // Show the operator both sides: QEMU's flat view lines and ours.
        const lines = text.split('\n').filter((l) => /FlatView|AS "|0000:|msix|rtl8168/.test(l));
        console.log(
          `QEMU info mtree -f:\n${lines.join('\n')}\nours:\n${ours.map((r) => r.join(' ')).join('\n')}`,
        );
      }
      // The comparison covers what matters: overlays, quirks, sub-page expansion and the I/O BARs.
      const names = theirs.map((r) => r[5]);
      expect(names).toEqual(
        expect.arrayContaining([
          'msix-table',
          'vfio-rtl8168-window-data-quirk',
          'vfio-rtl8168-window-address-quirk',
        ]),
      );
      expect(theirs).toContainEqual([
        'rtl8139',
        1,
        0,
        0x1000,
        'ramd',
        `${bdfOf('rtl8139')} BAR 1 mmaps[0]`,
        0,
        0,
      ]);
      expect(theirs.some((r) => r[0] === 'rtl8139' && r[1] === 0 && r[4] === 'i/o')).toBe(true);
      expect(ours).toEqual(theirs);
    }, 300_000);
  },
);
