// The Node VMM (lib/vmm's PcMachine) boots the lab's Linux kernel under real (nested) KVM with the
// lab's e1000e and rtl8139 passed through: the guest's own e1000e and 8139cp drivers bind, bring
// their links up and ping the user-mode network's gateway (descriptor rings in guest RAM reached
// by device DMA through the DMA listener, MSI-X through irqfds, INTx through a resample irqfd).
// The guest then reboots, and on its second boot it misbehaves on purpose; the machine reports
// what it did and runs on. Closing leaves no slot, irqfd, DMA mapping or fd behind, and asks KVM to
// remove no route or irqfd one by one (the VM goes first, they with it).
import * as fs from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { MsiRoutes, PcMachine, PciIntxRouting, type GuestError, type PcExit } from '../../../lib';
import { bdfOf, describeDevice } from '../hil';
import { expectNothingHeld, medianLateMs, runWatched, INITRD, KERNEL, useVmmGuest } from './vmm';

const PINGS = 4;
const CMDLINE = `console=ttyS0 quiet loglevel=3 reboot=k panic=-1 guest.end=reboot guest.pings=${PINGS}`;

/** The fds of this process that are VFIO or KVM objects. */
function vfioKvmFds(): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const t = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (t.startsWith('/dev/vfio') || t.includes('vfio') || t.startsWith('anon_inode:kvm')) out.push(t);
    } catch {
      // raced with a close
    }
  }
  return out.sort();
}

/** `received` of the guest's ping summary for `ifc`, or -1 when there is none. */
function received(lines: readonly string[], ifc: string): number {
  const re = new RegExp(`^guest: ping ${ifc} (\\d+) packets transmitted, (\\d+) packets received`);
  for (const l of lines) {
    const m = re.exec(l);
    if (m) return Number(m[2]);
  }
  return -1;
}

/** The interrupt counts the guest printed from /proc/interrupts for `ifc`. */
function irqCounts(lines: readonly string[], ifc: string): number[] {
  return lines
    .filter((l) => l.startsWith(`guest: irq ${ifc} `))
    .map((l) => Number(/^guest: irq \S+\s+\d+:\s+(\d+)/.exec(l)?.[1] ?? NaN));
}

/** Guest RAM shown only through the boot images' windows, none of its regions made into one. */
function expectNoBigWindow(pc: PcMachine): void {
  const ram = pc.machine.ram;
  expect(ram.windowStats.largest).toBeLessThan(64 * 2 ** 20);
  expect(ram.windowStats.bytes).toBeLessThan(ram.length / 4);
  expect(pc.machine.ramRanges.map((r) => r.region.allocatedBacking)).toEqual(
    pc.machine.ramRanges.map(() => null),
  );
}

describeDevice('e1000e', 'a Linux guest under the Node VMM drives passed-through NICs', (e1000e) => {
  let pc: PcMachine | undefined;
  let lines: string[] = [];
  let reports: GuestError[] = [];
  let exit: PcExit | undefined;
  const fdsBefore = vfioKvmFds();

  useVmmGuest();
  afterAll(() => pc?.close());

  test('boots; e1000e (MSI-X) and 8139cp (INTx) bind, link up and answer pings', async () => {
    pc = PcMachine.create({
      kernel: KERNEL!,
      initrd: INITRD!,
      cmdline: CMDLINE,
      hugepages: true,
      // type1, whose peer-to-peer mappings of the BARs this test counts (test/hil/vmm/iommufd.test.ts
      // boots the same guest on iommufd).
      backend: 'type1',
      devices: [{ bdf: e1000e() }, { bdf: bdfOf('rtl8139') }],
      onLine: (l) => lines.push(l),
    });
    pc.on('guest-error', (e) => reports.push(e));
    // Guest RAM is mapped for DMA from the first device on.
    expect(pc.resources().dmaMappings).toBeGreaterThan(0);
    // Without a window of all of it (V8 answers hundreds of MiB of ArrayBuffer with a full GC): the
    // DMA listener and KVM take the RAM itself, the loaders a window per boot image.
    expectNoBigWindow(pc);
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    exit = await runWatched(pc, 90_000);
    delay.disable();
    // The vCPU runs on its own thread: the event loop kept turning while the guest booted and pinged.
    // Loosely, by the median (the run loop of 50 ms slices held it 50 ms at a time): on the lab's
    // one CPU a few samples wait for the scheduler for hundreds of ms; bench:vmm holds the target.
    expect(medianLateMs(delay)).toBeLessThan(10);
    const out = lines.join('\n');
    // On failure, the console's last lines say how far the guest got.
    expect({ exit, console: exit.reason === 'reset' ? [] : lines.slice(-12) }).toEqual({
      exit: { reason: 'reset', by: 'i8042' },
      console: [],
    });
    expect(out).toMatch(/^guest: init reached, kernel \S+, 1 cpus online$/m);
    expect(lines).toContain('guest: drivers bound');
    expect(out).toMatch(/^guest: driver 0000:00:03\.0 0x8086:0x10d3 e1000e$/m);
    expect(out).toMatch(/^guest: driver 0000:00:04\.0 0x10ec:0x8139 8139cp$/m);
    // The guest's own lspci-like view: MSI-X vectors for e1000e, the INTx line for the RTL8139.
    expect(out).toMatch(
      /^guest: pci 0000:00:03\.0 class 0x020000 0x8086:0x10d3 rev \S+ irq \d+ msi [1-9]\d* driver e1000e$/m,
    );
    expect(out).toMatch(
      /^guest: pci 0000:00:04\.0 class 0x020000 0x10ec:0x8139 rev 0x20 irq \d+ msi 0 driver 8139cp$/m,
    );
    expect(lines).toContain('guest: link eth0 e1000e up');
    expect(lines).toContain('guest: link eth1 8139cp up');
    // The user-mode network answers every ping; one lost to a slow start is tolerated.
    expect(received(lines, 'eth0')).toBeGreaterThanOrEqual(PINGS - 1);
    expect(received(lines, 'eth1')).toBeGreaterThanOrEqual(PINGS - 1);
    const msix = irqCounts(lines, 'eth0');
    expect(out).toMatch(/^guest: irq eth0 .*PCI-MSIX-0000:00:03\.0/m);
    expect(msix.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2); // rx and tx vectors
    expect(out).toMatch(/^guest: irq eth1 .*IO-APIC\s+\d+-fasteoi\s+eth1$/m);
    expect(irqCounts(lines, 'eth1').some((n) => n > 0)).toBe(true);
    expect(lines.some((l) => l.startsWith('guest: FAIL'))).toBe(false);
    // A well-behaved guest leaves nothing to report but its legacy port probes, and the DMA
    // listener's skip of e1000e's MSI-X page remainder (mapped only whole, as in QEMU).
    expect(reports.filter((r) => r.source !== 'memory' && r.source !== 'dma')).toEqual([]);
    const skips = reports.filter((r) => r.source === 'dma');
    expect(skips.every((r) => r.kind === 'dma-skipped' && r.where!.includes('BAR 3'))).toBe(true);
    // Each distinct skip once, however many commits planned it again.
    expect(new Set(skips.map((r) => `${r.where} ${r.address}`)).size).toBe(skips.length);
    expect(pc.unservedExits).toBe(0);
    // The console's THR writes and LSR/MSR reads were served on the vCPU thread (no device here
    // has a port BAR the guest uses): most port exits, and more than one per byte transmitted.
    expect(pc.exits.nativeIo).toBeGreaterThan(pc.uart.transmitted);
    expect(pc.exits.io).toBeLessThan(pc.exits.nativeIo / 2);
    // The deprecated counts by PcReport kind are the sink's.
    expect(pc.reportCounts.unassigned).toBe(pc.guestErrors.count('memory'));
    expect(pc.reportCounts.dma).toBe(pc.guestErrors.count('dma'));
  }, 120_000);

  test('the guest reboots off the event loop: devices reset, BARs placed again, the drivers bind again', async () => {
    expect(exit?.reason).toBe('reset');
    lines = [];
    reports = [];
    const bars = pc!.bars.map((b) => `${b.slot}.${b.bar}@${b.address}`);
    let turns = 0;
    const counter = setInterval(() => turns++, 1);
    try {
      const rebooting = pc!.rebootAsync({ cmdline: `${CMDLINE} guest.misbehave=1` });
      await expect(pc!.run()).rejects.toMatchObject({ code: 'EBUSY' });
      await rebooting;
    } finally {
      clearInterval(counter);
    }
    // The loop ran timers while the devices were reset and the boot was set up.
    expect(turns).toBeGreaterThan(2);
    // RAM was cleared in place: the reboot kept no window of it beyond the boot images'.
    expectNoBigWindow(pc!);
    expect(pc!.boots).toBe(2);
    // The same firmware places the BARs the same way.
    expect(pc!.bars.map((b) => `${b.slot}.${b.bar}@${b.address}`)).toEqual(bars);
    exit = await pc!.run({ timeoutMs: 90_000 });
    expect({ exit, console: exit.reason === 'reset' ? [] : lines.slice(-12) }).toEqual({
      exit: { reason: 'reset', by: 'i8042' },
      console: [],
    });
    expect(lines).toContain('guest: drivers bound');
    expect(received(lines, 'eth0')).toBeGreaterThanOrEqual(PINGS - 1);
    expect(received(lines, 'eth1')).toBeGreaterThanOrEqual(PINGS - 1);
    // The root-bus RTL8139 has no reset method: reported, and the boot went on, as in QEMU.
    expect(reports.filter((r) => r.kind === 'reset-missing')).toEqual([
      expect.objectContaining({ source: 'vmm', device: bdfOf('rtl8139'), action: 'state-only' }),
    ]);
  }, 120_000);

  test('a misbehaving guest is reported, never thrown, and the machine runs on', () => {
    const out = lines.join('\n');
    expect(lines).toContain('guest: misbehave done');
    expect(lines).toContain('guest: done');
    const bar0 = pc!.bars.find((b) => b.slot === 3 && b.bar === 0)!.address;
    const bar3 = pc!.bars.find((b) => b.slot === 3 && b.bar === 3)!.address;
    // With memory decode off the BAR is gone from the bus: the read is all-ones, and reported.
    expect(out).toMatch(/^guest: misbehave decode-off read 0xFFFFFFFF$/m);
    expect(out).not.toMatch(/^guest: misbehave decode-on read 0xFFFFFFFF$/m);
    const memory = reports.filter((r) => r.source === 'memory');
    expect(memory.filter((r) => r.address === bar0 + 8)).toEqual([
      expect.objectContaining({
        kind: 'unassigned',
        where: 'pci-memory',
        width: 4,
        write: false,
        action: 'read-all-ones',
      }),
    ]);
    // The MSI-X table takes 4- and 8-byte accesses only. The byte write is refused; the misaligned
    // 2-byte write is cut into its two bytes first, as QEMU's address_space_rw cuts it, and each
    // byte is refused.
    const table = memory.filter((r) => r.address! >= bar3 && r.address! < bar3 + 0x50);
    expect(table.map((r) => [r.kind, r.address! - bar3, r.width, r.write, r.action])).toEqual([
      ['access-invalid-size', 0, 1, true, 'dropped'],
      ['access-invalid-size', 1, 1, true, 'dropped'],
      ['access-invalid-size', 2, 1, true, 'dropped'],
    ]);
    expect(table.every((r) => (r.detail as { region: string }).region === 'msix-table')).toBe(true);
    // The write to config 0x40, where e1000e has no register: once, passed on to the device.
    const config = reports.filter((r) => r.kind === 'config-unimplemented' && r.address === 0x40);
    expect(config).toEqual([
      expect.objectContaining({
        device: e1000e(),
        where: 'config',
        address: 0x40,
        width: 1,
        write: true,
        action: 'passed-on',
      }),
    ]);
  });

  test('closing leaves no memory slot, irqfd, DMA mapping or fd behind', () => {
    const vm = pc!.vm!;
    expect(vm.slots.used).toBeGreaterThan(0);
    expect(vm.assignments.filter((a) => a.kind === 'irqfd').length).toBeGreaterThan(0);
    // The VM goes before the devices' interrupt routing: its GSI table and irqfds go with it, so
    // the close asks KVM to remove neither (each removal waits for an SRCU grace period).
    const routing = jest.spyOn(vm, 'setGsiRouting');
    const vmClosedAt: string[] = [];
    const clear = jest.spyOn(MsiRoutes.prototype, 'clear');
    clear.mockImplementation(function (this: MsiRoutes) {
      vmClosedAt.push(`routes ${vm.closed}`);
      clear.mockRestore();
      this.clear();
    });
    const intx = jest.spyOn(PciIntxRouting.prototype, 'close');
    intx.mockImplementation(function (this: PciIntxRouting) {
      vmClosedAt.push(`intx ${vm.closed}`);
      intx.mockRestore();
      this.close();
    });
    pc!.close();
    expect(vmClosedAt).toEqual(['intx true', 'routes true']);
    expect(routing).not.toHaveBeenCalled();
    expect(vm.closed).toBe(true);
    expect(vm.slots.used).toBe(0);
    expect(vm.assignments).toEqual([]);
    expect(pc!.machine.container!.closed).toBe(true);
    expectNothingHeld(pc!);
    expect(vfioKvmFds()).toEqual(fdsBefore);
  });
});
