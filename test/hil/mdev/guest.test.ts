// A Linux guest under the Node VMM with an mtty passed through by UUID, through its cdev on iommufd
// (the quick mdev suites run on both backends; this slow one once, on the newer path): the guest
// sees a 16550 serial controller (4348:3253, class 0x070002) on its PCI bus and its serial driver
// binds to it.
import { GuestErrorSink, PcMachine } from '../../../lib';
import { findMdev, type Device } from '../../../lib/vfio';
import { describeBackend } from '../backends';
import { expectNothingHeld, INITRD, KERNEL, useVmmGuest } from '../vmm/vmm';
import { describeMtty, makeMtty, removeAll } from './mtty';

const made = new Set<string>();
afterAll(() => removeAll(made));

describeMtty('a Linux guest binds its serial driver to a passed-through mtty', () =>
  describeBackend('iommufd', 'the guest', () => {
    useVmmGuest();

    test('8250_pci takes the mtty; the machine closes clean', async () => {
      const uuid = makeMtty('mtty-1', made);
      const lines: string[] = [];
      // The machine's sink, quiet: what it absorbed is said below, from its counts.
      const guestErrors = new GuestErrorSink({ log: null });
      const pc = PcMachine.create({
        guestErrors,
        kernel: KERNEL!,
        initrd: INITRD!,
        cmdline: 'console=ttyS0 quiet loglevel=6 reboot=k panic=-1 guest.end=reboot guest.pings=1',
        devices: [{ bdf: uuid }],
        backend: 'iommufd',
        onLine: (l) => {
          lines.push(l);
          // The driver has the port once the guest prints the kernel's line for it: enough.
          if (/^guest: dmesg 0000:00:03\.0: ttyS\d+ at I\/O/.test(l)) pc.stop();
        },
      });
      try {
        const exit = await pc.run({ timeoutMs: 150_000 });
        const out = lines.join('\n');
        expect(pc.machine.backend).toBe('iommufd');
        expect((pc.machine.devices[0]!.device as Device).path).toBe(findMdev(uuid)!.cdev);
        console.log(lines.filter((l) => /pci 0000:00:03|ttyS/.test(l)).join('\n'));
        expect({ exit, tail: exit.reason === 'stopped' ? [] : lines.slice(-10) }).toEqual({
          exit: { reason: 'stopped' },
          tail: [],
        });
        expect(out).toMatch(
          /^guest: pci 0000:00:03\.0 class 0x070002 0x4348:0x3253 rev 0x10 irq \d+ msi 0 driver serial$/m,
        );
        expect(out).toMatch(/^guest: dmesg .*0000:00:03\.0: ttyS\d+ at I\/O 0x[0-9a-f]+ .* is a 16550A$/m);
        // What the machine absorbed (INTx unmasking mtty does not offer, the guest's probes past the
        // 8-byte BAR or the 255-byte config space), said for the record.
        const seen = Object.entries(pc.guestErrors.counts);
        expect(pc.guestErrors).toBe(guestErrors);
        console.log(`absorbed: ${seen.map(([k, n]) => `${k} x${n}`).join('; ') || 'nothing'}`);
        expect(pc.unservedExits).toBe(0);
      } finally {
        await pc.closeAsync();
      }
      expectNothingHeld(pc);
      expect(findMdev(uuid)?.removing).toBe(false); // the VMM let go of it: it can be removed
    }, 180_000);
  }),
);
