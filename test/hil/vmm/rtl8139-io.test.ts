// The lab's RTL8139 presented to a Linux guest as 10ec:8138 (the ID override), so the guest's
// 8139too binds it, loaded with use_io=1: every register access is port I/O to BAR 0, which the
// Node VMM serves through the device fd. The guest's pings flow with INTx through a resample irqfd.
// This machine has two vCPUs, which the Node VMM runs in turns on its thread.
import { PcMachine, type RoutedAccess } from '../../../lib';
import { describeDevice } from '../hil';
import { expectNothingHeld, INITRD, KERNEL, useVmmGuest } from './vmm';

const PINGS = 3;

describeDevice('rtl8139', 'a Linux guest drives it as an 8139too through port I/O', (rtl8139) => {
  useVmmGuest();

  test('with two vCPUs, 8139too (use_io=1) binds, links up and answers pings; its registers are port exits through the fd', async () => {
    const lines: string[] = [];
    const accesses: RoutedAccess[] = [];
    let pinging = false;
    const pc = PcMachine.create({
      kernel: KERNEL!,
      initrd: INITRD!,
      cmdline: `console=ttyS0 quiet loglevel=3 reboot=k panic=-1 guest.end=reboot guest.rtl=8139too guest.pings=${PINGS}`,
      hugepages: true,
      cpus: 2,
      devices: [{ bdf: rtl8139(), deviceId: 0x8138 }],
      onLine: (l) => {
        lines.push(l);
        if (l.startsWith('guest: ping start ')) pinging = true;
        if (l.startsWith('guest: ping done ')) pinging = false;
      },
      onAccess: (a) => {
        if (pinging) accesses.push(a);
      },
    });
    try {
      const io = pc.bars.find((b) => b.bar === 0 && b.type === 'io')!;
      const route = pc.machine.bus
        .mapinfo()
        .find((r) => r.space === 'io' && r.addr <= io.address && io.address < r.addr + r.size);
      expect(route?.mapinfo).toBe('trapped-fd');
      const exit = await pc.run({ timeoutMs: 90_000 });
      expect(exit).toEqual({ reason: 'reset', by: 'i8042' });
      const out = lines.join('\n');
      expect(out).toMatch(/^guest: init reached, kernel \S+, 2 cpus online$/m);
      expect(out).toMatch(/^guest: driver 0000:00:03\.0 0x10ec:0x8138 8139too$/m);
      expect(lines).toContain('guest: link eth0 8139too up');
      const m = /^guest: ping eth0 (\d+) packets transmitted, (\d+) packets received/m.exec(out);
      expect(Number(m?.[2])).toBeGreaterThanOrEqual(PINGS - 1);
      expect(out).toMatch(/^guest: irq eth0 .*IO-APIC\s+\d+-fasteoi\s+eth0$/m);
      // While the guest pinged, its driver's register accesses were port exits to BAR 0.
      const toBar = accesses.filter(
        (a) => a.space === 'io' && a.address >= io.address && a.address < io.address + io.size,
      );
      expect(toBar.length).toBeGreaterThan(PINGS * 4);
      expect(accesses.filter((a) => a.space === 'memory')).toEqual([]);
    } finally {
      pc.close();
    }
    expectNothingHeld(pc);
  }, 120_000);
});
