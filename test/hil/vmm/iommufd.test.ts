// The Node VMM on the iommufd backend: PcMachine boots the lab's Linux guest with e1000e and the
// RTL8139 passed through their device cdevs (no group opened), guest RAM mapped into an IOAS by the
// DMA listener, and KVM's VFIO device told about the cdevs. The guest's drivers bind, their links
// come up, and the user-mode network answers their pings: descriptor rings reached by device DMA
// through the IOAS, MSI-X and INTx delivered. Closing leaves no mapping or fd behind.
import * as fs from 'node:fs';

import { PcMachine, type PcExit } from '../../../lib';
import { describeBackend, vfioNodeFds } from '../backends';
import { bdfOf, describeDevice } from '../hil';
import { expectNothingHeld, runWatched, INITRD, KERNEL, useVmmGuest } from './vmm';

const PINGS = 3;
const CMDLINE = `console=ttyS0 quiet loglevel=3 reboot=k panic=-1 guest.end=reboot guest.pings=${PINGS}`;

function received(lines: readonly string[], ifc: string): number {
  const re = new RegExp(`^guest: ping ${ifc} (\\d+) packets transmitted, (\\d+) packets received`);
  for (const l of lines) {
    const m = re.exec(l);
    if (m) return Number(m[2]);
  }
  return -1;
}

describeDevice('e1000e', 'a Linux guest with NICs passed through on iommufd', (e1000e) => {
  describeBackend('iommufd', 'PcMachine', () => {
    let pc: PcMachine | undefined;
    const lines: string[] = [];
    const before = vfioNodeFds();

    useVmmGuest();
    afterAll(() => pc?.close());

    test('boots; e1000e and 8139cp bind through their cdevs, link up and answer pings', async () => {
      pc = PcMachine.create({
        kernel: KERNEL!,
        initrd: INITRD!,
        cmdline: CMDLINE,
        hugepages: true,
        backend: 'iommufd',
        devices: [{ bdf: e1000e() }, { bdf: bdfOf('rtl8139') }],
        onLine: (l) => lines.push(l),
      });
      const m = pc.machine;
      expect([m.backend, m.backendDecision?.requested, m.container?.kind]).toEqual([
        'iommufd',
        'iommufd',
        'iommufd',
      ]);
      // Guest RAM is in the IOAS from the first device on; no group node or container is open.
      expect(pc.resources().dmaMappings).toBeGreaterThan(0);
      // Decode is on for every BAR once created. iommufd cannot pin a BAR: the first one refused
      // stands for every other, asked no more and reported once; each is still a skip (e1000e's
      // BARs 0 and 1, the RTL8139's BAR 1).
      const dma = pc.machine.dma!;
      expect(dma.stats).toMatchObject({ fatalCount: 0, dmaErrorCount: 1, unaskedMaps: 2 });
      const refused = dma.skipped().filter((s) => s.reason === 'map-failed');
      expect(refused.map((s) => s.region.replace(/^\S+ /, '')).sort()).toEqual([
        'BAR 0 mmaps[0]',
        'BAR 1 mmaps[0]',
        'BAR 1 mmaps[0]',
      ]);
      expect(refused.every((s) => (s.error as { code?: string }).code === 'EFAULT')).toBe(true);
      const nodes = vfioNodeFds().filter((n) => !before.includes(n));
      expect(nodes.filter((n) => /^\/dev\/vfio\/(\d+|vfio)$/.test(n))).toEqual([]);
      // The two cdevs (the vCPU threads' exit table holds duplicates of the device fds).
      expect(new Set(nodes.filter((n) => n.startsWith('/dev/vfio/devices/'))).size).toBe(2);
      expect(pc.devices.map((d) => [d.backend, d.group])).toEqual([
        ['iommufd', null],
        ['iommufd', null],
      ]);
      const exit: PcExit = await runWatched(pc, 120_000);
      expect({ exit, console: exit.reason === 'reset' ? [] : lines.slice(-12) }).toEqual({
        exit: { reason: 'reset', by: 'i8042' },
        console: [],
      });
      // KVM's VFIO device holds the two device cdevs.
      expect(pc.vm!.vfioFiles.map((fd) => fs.readlinkSync(`/proc/self/fd/${fd}`)).sort()).toEqual(
        pc.devices.map((d) => (d.device as unknown as { path: string }).path).sort(),
      );
      expect(lines).toContain('guest: drivers bound');
      expect(lines).toContain('guest: link eth0 e1000e up');
      expect(lines).toContain('guest: link eth1 8139cp up');
      expect(received(lines, 'eth0')).toBeGreaterThanOrEqual(PINGS - 1);
      expect(received(lines, 'eth1')).toBeGreaterThanOrEqual(PINGS - 1);
      expect(lines.some((l) => l.startsWith('guest: FAIL'))).toBe(false);
      expect(pc.machine.dma!.stats).toMatchObject({ fatalCount: 0 });
    }, 180_000);

    test('closing leaves no DMA mapping, device or fd behind', () => {
      const ioas = pc!.machine.container!;
      pc!.close();
      expect(ioas.closed).toBe(true);
      expect(ioas.dmaMappings()).toEqual([]);
      expectNothingHeld(pc!);
      expect(vfioNodeFds()).toEqual(before);
    });
  });
});
