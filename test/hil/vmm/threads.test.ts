// The Node VMM's vCPU threads under the lab's real (nested) KVM: a machine with no passed-through
// device runs without VFIO and reboots (the synchronous reboot); close() from inside a console callback, and during the guest's heaviest
// exits (8139too on port I/O, every register access served on a vCPU thread), ends the run with
// `stopped` and leaves nothing behind.
import * as fs from 'node:fs';
import { PcMachine, type PcExit } from '../../../lib';
import { describeDevice } from '../hil';
import { expectNothingHeld, INITRD, KERNEL, useVmmGuest } from './vmm';

const BASE = 'console=ttyS0 quiet loglevel=3 reboot=k panic=-1';

/** The fds of this process on /dev/vfio. */
function vfioFds(): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const t = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (t.startsWith('/dev/vfio')) out.push(t);
    } catch {
      // raced with a close
    }
  }
  return out;
}

describe('PcMachine on vCPU threads', () => {
  useVmmGuest();

  test('a machine without devices boots to init without VFIO, reboots synchronously; close() from onLine ends the run stopped', async () => {
    const before = vfioFds();
    let pc: PcMachine | undefined;
    let sawVfio: string[] = [];
    pc = await PcMachine.open({
      kernel: KERNEL!,
      initrd: INITRD!,
      cmdline: `${BASE} guest.end=reboot guest.pings=1`,
      hugepages: true,
      devices: [],
    });
    // The console as a node:events event, subscribed after open (the onLine option is the same).
    pc.on('line', (l) => {
      if (!l.startsWith('guest: init reached')) return;
      if (pc!.boots === 1) {
        pc!.stop();
        return;
      }
      sawVfio = vfioFds();
      pc!.close();
    });
    expect(pc.machine.container).toBeNull();
    expect(await pc.run({ timeoutMs: 90_000 })).toEqual({ reason: 'stopped' });
    pc.reboot();
    expect(pc.boots).toBe(2);
    const exit: PcExit = await pc.run({ timeoutMs: 90_000 });
    expect(exit).toEqual({ reason: 'stopped' });
    expect(sawVfio).toEqual(before);
    expectNothingHeld(pc);
    pc = undefined;
  }, 180_000);
});

describeDevice('rtl8139', 'closing the machine while the vCPU threads serve port exits', (rtl8139) => {
  useVmmGuest();

  test('closeAsync() while 8139too pings over port I/O stops the threads and leaves nothing held', async () => {
    const later = { close: (): void => undefined };
    let closed: Promise<void> | undefined;
    const pc = await PcMachine.open({
      kernel: KERNEL!,
      initrd: INITRD!,
      cmdline: `${BASE} guest.end=reboot guest.rtl=8139too guest.pings=1000 guest.interval=0.01`,
      hugepages: true,
      cpus: 2,
      devices: [{ bdf: rtl8139(), deviceId: 0x8138 }],
      onLine: (l) => {
        if (l.startsWith('guest: ping start ')) setTimeout(() => later.close(), 300);
      },
    });
    let busy = 0;
    later.close = () => {
      busy = pc.exits.nativeIo;
      closed = pc.closeAsync();
    };
    const exit = await pc.run({ timeoutMs: 90_000 });
    expect(exit).toEqual({ reason: 'stopped' });
    await closed;
    // The close landed while the guest's driver was busy on its port registers.
    expect(busy).toBeGreaterThan(0);
    expectNothingHeld(pc);
  }, 120_000);
});

describeDevice('e1000e', 'aborting PcMachine.open', (e1000e) => {
  useVmmGuest();

  test('an abort between the steps of open closes what was built and rejects with the reason', async () => {
    const before = vfioFds();
    const kvmFds = (): number =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`).includes('kvm');
        } catch {
          return false;
        }
      }).length;
    const kvmBefore = kvmFds();
    // Abort once the device is open: open is then between two of its steps.
    const ac = new AbortController();
    const reason = new Error('stop once the device is open');
    const watch = setInterval(() => {
      if (vfioFds().length > before.length) ac.abort(reason);
    }, 1);
    try {
      await expect(
        PcMachine.open(
          { kernel: KERNEL!, initrd: INITRD!, hugepages: true, devices: [{ bdf: e1000e() }] },
          { signal: ac.signal },
        ),
      ).rejects.toBe(reason);
    } finally {
      clearInterval(watch);
    }
    expect(vfioFds()).toEqual(before);
    expect(kvmFds()).toBe(kvmBefore);
  }, 120_000);
});
