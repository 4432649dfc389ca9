import { PcMachine } from 'vfio-bridge';

const pc = await PcMachine.open({
  kernel: '/boot/vmlinuz',
  initrd: 'initramfs.cpio',
  cmdline: 'console=ttyS0 quiet reboot=k panic=-1',
  ramSize: 256 * 2 ** 20,
  devices: [{ bdf: '0000:00:05.0' }, { bdf: '0000:00:04.0', deviceId: 0x8138 }], // ID override
  onLine: (line) => console.log(line), // the guest console, line by line
});
pc.on('guest-error', (e) => console.warn(e.message)); // what the guest did wrong, never thrown
const exit = await pc.run(); // { reason: 'reset', by: 'i8042' } when the guest reboots
console.log(exit.reason);
pc.reboot(); // devices reset, BARs placed again, a new VM: boot again
await pc.run({ signal: AbortSignal.timeout(60_000) });
await pc.closeAsync(); // pc.resources(): no slot, irqfd, DMA mapping or device left
