import { PcMachine } from 'vfio-bridge';

// Ctrl-C or ten minutes, whichever comes first, ends the run.
const interrupt = new AbortController();
process.once('SIGINT', () => interrupt.abort(new Error('interrupted')));
const signal = AbortSignal.any([interrupt.signal, AbortSignal.timeout(10 * 60_000)]);

const pc = await PcMachine.open({
  kernel: '/boot/vmlinuz', // a bzImage
  initrd: 'initramfs.cpio',
  cmdline: 'console=ttyS0 quiet reboot=k panic=-1',
  ramSize: 512 * 2 ** 20,
  cpus: 2, // each vCPU on its own thread
  devices: [{ bdf: '0000:03:00.0' }, { bdf: '0000:04:00.0', deviceId: 0x8138 }], // vfio-pci devices
  onLine: (line) => {
    console.log(`guest: ${line}`);
    if (line.includes('login:')) pc.stop(); // the run resolves with { reason: 'stopped' }
  },
});
// What the guest did wrong, from every layer, never thrown (see "Guest errors" below).
pc.on('guest-error', (e) => console.warn(`absorbed: ${e.source}/${e.kind}: ${e.message}`));
try {
  let exit = await pc.run({ signal });
  if (exit.reason === 'reset') {
    // The guest rebooted: reset the devices, place their BARs again and boot a fresh VM.
    await pc.rebootAsync();
    exit = await pc.run({ signal });
  }
  console.log(exit, pc.guestErrors.counts, pc.exits);
} finally {
  await pc.closeAsync(); // device fds closed on the thread pool
  console.log(pc.resources()); // all zero: no slot, irqfd, DMA mapping or device left
}
