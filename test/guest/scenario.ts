/**
 * The end-to-end scenario of test/guest/e2e.S on the lab's edu, rtl8139 and ivshmem (presented as
 * an RTL8168): the devices on one SystemAddressSpaces, guest RAM in KVM with edu's DMA mapped through its
 * container, the guest's configuration cycles served by lib/vmm's PciRootBus, edu's MSI wired to irqfd, and
 * every exit recorded with the mapinfo kind of what it reached. Shared by the lab test and the demo.
 *
 * Guest RAM (a memfd mapping) is mapped for DMA at IOVA = guest-physical address in edu's container
 * with Container.mapDma, and unmapped at close.
 */
import {
  type DeviceErrorEvent,
  MemoryRegion,
  SystemAddressSpaces,
  PciRootBus,
  PCI_CONFIG_PORT,
  type MapInfo,
  VcpuSet,
  type VcpuSetEnd,
  PciMsiRouting,
  VfioPciDevice,
} from '../../lib';
import { openDevice, type Opened } from '../hil/hil';
import { placeBar } from '../support/pci-helpers';
import { guestBinary } from './guest';
import { CHECKPOINT_PORT, GuestMachine, RAM_SIZE } from './machine';

/** Where the VMM places the BARs (guest-physical), and the other parameters of the guest. */
export const LAYOUT = {
  edu: 0xe000_0000,
  eduMoved: 0xe020_0000,
  rtlMmio: 0xe040_0800, // off page alignment: trapped-mmap
  rtlIo: 0xc000,
  ivs0: 0xe080_0000,
  ivs2: 0xe060_0000,
  vector: 0x40,
  dmaSrc: 0x1_0000,
  dmaDst: 0x1_1000,
} as const;

/** Guest-visible device numbers on bus 0 (as in the lab). */
const SLOTS = { edu: 3, rtl8139: 4, ivshmem: 6 } as const;

/** What an exit reached. */
export type ExitKind = MapInfo | 'unassigned' | 'vmm';

/** One exit the guest caused. */
export interface ExitRecord {
  phase: number;
  space: 'memory' | 'io';
  address: number;
  size: number;
  isWrite: boolean;
  value: number | bigint;
  kind: ExitKind;
  /** The region that served it (the mapinfo range's name, or the VMM port). */
  name: string;
}

export interface E2eSetup {
  bus: SystemAddressSpaces;
  machine: GuestMachine;
  edu: VfioPciDevice;
  rtl: VfioPciDevice;
  ivs: VfioPciDevice;
  msi: PciMsiRouting;
  opened: Opened[];
  reports: DeviceErrorEvent[];
  /** Bytes unmapped for DMA at close (all of guest RAM when nothing was left behind). */
  dmaUnmapped: number;
  close(): void;
}

export interface E2eResult {
  run: VcpuSetEnd & { mmioExits: number; ioExits: number };
  results: number[];
  exits: ExitRecord[];
  /** The guest's DMA destination buffer and source buffer (64 bytes each). */
  dmaSrc: Uint8Array;
  dmaDst: Uint8Array;
  ms: number;
}

/** Opens the three devices, builds the bus, the machine and the wiring; BARs placed, decode on. */
export function openE2e(bdfs: { edu: string; rtl8139: string; ivshmem: string }): E2eSetup {
  const undo: (() => void)[] = [];
  const run = <T>(fn: () => T, close: (v: T) => void): T => {
    const v = fn();
    undo.push(() => close(v));
    return v;
  };
  try {
    const oEdu = run(
      () => openDevice(bdfs.edu),
      (o) => o.close(),
    );
    const oRtl = run(
      () => openDevice(bdfs.rtl8139),
      (o) => o.close(),
    );
    const oIvs = run(
      () => openDevice(bdfs.ivshmem),
      (o) => o.close(),
    );
    const bus = run(
      () => new SystemAddressSpaces(),
      (b) => b.close(),
    );
    const reports: DeviceErrorEvent[] = [];
    const edu = VfioPciDevice.open(bus, oEdu.device, { log: null });
    const rtl = VfioPciDevice.open(bus, oRtl.device, { log: null });
    const ivs = VfioPciDevice.open(bus, oIvs.device, { log: null, vendorId: 0x10ec, deviceId: 0x8168 });
    for (const d of [edu, rtl, ivs]) d.on('device-error', (e) => reports.push(e));
    placeBar(edu, 0, LAYOUT.edu);
    placeBar(rtl, 0, LAYOUT.rtlIo);
    placeBar(rtl, 1, LAYOUT.rtlMmio);
    placeBar(ivs, 0, LAYOUT.ivs0);
    placeBar(ivs, 2, LAYOUT.ivs2);
    for (const d of [edu, rtl, ivs]) d.configWrite(0x04, 2, 0x0007);
    const machine = run(
      () => new GuestMachine(bus),
      (m) => m.close(),
    );
    for (const o of [oEdu, oRtl, oIvs]) machine.vm.addVfioFile(o.group);
    const routes = machine.routes!;
    const vm = machine.vm;
    const msi = run(
      () =>
        new PciMsiRouting(edu, {
          update: (key, msg, trigger) => routes.update(key, msg, trigger),
          signalMsi: (lo, hi, data) => vm.signalMsi(lo, hi, data),
        }),
      (s) => s.close(),
    );
    const host = new PciRootBus();
    host.attach(SLOTS.edu, 0, edu);
    host.attach(SLOTS.rtl8139, 0, rtl);
    host.attach(SLOTS.ivshmem, 0, ivs);
    bus.io.root.addSubregion(host.region(), PCI_CONFIG_PORT);
    // Guest RAM at IOVA = guest-physical address, in edu's container.
    oEdu.container.mapDma({ iova: 0, size: RAM_SIZE, memory: machine.ram });
    const setup: E2eSetup = {
      bus,
      machine,
      edu,
      rtl,
      ivs,
      msi,
      opened: [oEdu, oRtl, oIvs],
      reports,
      dmaUnmapped: 0,
      close() {
        for (const fn of undo.splice(0).reverse()) fn();
      },
    };
    undo.push(() => {
      setup.dmaUnmapped = oEdu.container.unmapDma(0, RAM_SIZE);
    });
    return setup;
  } catch (e) {
    for (const fn of undo.reverse()) fn();
    throw e;
  }
}

/** Classifies an access by the bus's mapinfo at the time it happened. */
function classify(
  setup: E2eSetup,
  space: 'memory' | 'io',
  address: number,
): { kind: ExitKind; name: string } {
  if (
    space === 'io' &&
    (address === CHECKPOINT_PORT || (address >= PCI_CONFIG_PORT && address < PCI_CONFIG_PORT + 8))
  ) {
    return { kind: 'vmm', name: address === CHECKPOINT_PORT ? 'checkpoint' : 'pci-conf' };
  }
  const hit = setup.bus
    .mapinfo()
    .find((r) => r.space === space && address >= r.addr && address < r.addr + r.size);
  return hit ? { kind: hit.mapinfo, name: hit.name } : { kind: 'unassigned', name: '-' };
}

/** Loads the guest, fills its parameters and runs it to its last checkpoint. */
export async function runE2e(setup: E2eSetup, totalMs = 60_000): Promise<E2eResult> {
  const { machine, bus } = setup;
  machine.load(guestBinary('e2e'));
  const msiCap = setup.edu.irq.msi!.capOffset;
  const params = [
    LAYOUT.edu,
    LAYOUT.rtlMmio,
    LAYOUT.rtlIo,
    LAYOUT.ivs2,
    (0x8000_0000 | (SLOTS.edu << 11)) >>> 0,
    msiCap,
    LAYOUT.eduMoved,
    LAYOUT.vector,
    LAYOUT.dmaSrc,
    LAYOUT.dmaDst,
  ];
  params.forEach((v, i) => machine.param(i, v));
  let phase = 0;
  const exits: ExitRecord[] = [];
  const checkpoint = MemoryRegion.io('checkpoint', 1, {
    read: () => 0xff,
    write: (_o, _s, v) => {
      phase = Number(v);
    },
  });
  bus.io.root.addSubregion(checkpoint, CHECKPOINT_PORT);
  const t0 = performance.now();
  try {
    // On the vCPU's own thread with no exit table: every exit comes to JavaScript, classified.
    let mmioExits = 0;
    let ioExits = 0;
    const set = new VcpuSet([machine.vcpu], {
      routing: {
        memory: bus.memory,
        io: bus.io,
        onAccess: (a) => {
          if (a.space === 'io') ioExits++;
          else mmioExits++;
          const c = classify(setup, a.space, a.address);
          // A checkpoint write belongs to the phase it opens.
          exits.push({ phase, ...a, ...c });
        },
        stop: () => phase === 0xff,
      },
    });
    let end: VcpuSetEnd;
    try {
      end = await set.run({ timeoutMs: totalMs });
    } finally {
      set.stop();
    }
    const run = { ...end, mmioExits, ioExits };
    const ms = performance.now() - t0;
    const results = Array.from({ length: 18 }, (_, i) => machine.result(i));
    const dmaSrc = machine.ram.readBlock(LAYOUT.dmaSrc, 64, 1) as Uint8Array;
    const dmaDst = machine.ram.readBlock(LAYOUT.dmaDst, 64, 1) as Uint8Array;
    return { run, results, exits, dmaSrc, dmaDst, ms };
  } finally {
    bus.io.root.removeSubregion(checkpoint);
  }
}

/** Exit counts per phase and kind: `{ 2: { 'trapped-mmap': 5, vmm: 1 }, ... }`. */
export function exitCounts(exits: readonly ExitRecord[]): Record<number, Partial<Record<ExitKind, number>>> {
  const out: Record<number, Partial<Record<ExitKind, number>>> = {};
  for (const e of exits) {
    const p = (out[e.phase] ??= {});
    p[e.kind] = (p[e.kind] ?? 0) + 1;
  }
  return out;
}
