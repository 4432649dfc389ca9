/**
 * The Node VMM side of bench:vmm and of the lab demo: PcMachine (lib/vmm) boots the VMM guest
 * (scripts/vmm/guest-init.sh) with the lab's e1000e and rtl8139 passed through, streams its console
 * as `guest: ...` lines like QEMU's side, and ends with what the machine absorbed and held.
 *
 *   node -r @swc-node/register scripts/vmm/node-vmm.ts --kernel FILE --initrd FILE
 *        [--append ARGS] [--mem MIB] [--timeout SECS] [--rtl 8139cp|8139too] [--reboots N]
 */
import { PcMachine, type PcDeviceSpec } from '../../lib';

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) throw new Error(`node-vmm: --${name} is required`);
  return fallback;
}

function bdfOf(role: string): string {
  for (const spec of (process.env.VFIO_BRIDGE_HIL_DEVICES ?? '').split(',')) {
    const [r, bdf] = spec.split('=');
    if (r === role && bdf) return bdf;
  }
  throw new Error(`node-vmm: the lab lists no ${role} device (VFIO_BRIDGE_HIL_DEVICES)`);
}

async function main(): Promise<void> {
  const rtl = arg('rtl', '8139cp');
  const devices: PcDeviceSpec[] = [{ bdf: bdfOf('e1000e') }];
  if (arg('no-rtl', 'no') === 'no') {
    devices.push(rtl === '8139too' ? { bdf: bdfOf('rtl8139'), deviceId: 0x8138 } : { bdf: bdfOf('rtl8139') });
  }
  const t0 = performance.now();
  const stamp = (): string => ((performance.now() - t0) / 1000).toFixed(2);
  let pc: PcMachine | undefined = undefined;
  pc = PcMachine.create({
    kernel: arg('kernel'),
    initrd: arg('initrd'),
    cmdline: `console=ttyS0 quiet loglevel=3 reboot=k panic=-1 guest.end=reboot guest.rtl=${rtl} ${arg('append', '')}`,
    ramSize: Number(arg('mem', '256')) * 2 ** 20,
    devices,
    cpus: Number(arg('cpus', '1')),
    hugepages: arg('hugepages', 'no') === 'yes',
    onLine: (line) => console.log(`[${stamp()}] ${line} (exits ${JSON.stringify(pc?.exits)})`),
    onReport: (r) => {
      if (r.kind !== 'unassigned')
        console.log(
          `[${stamp()}] vmm: report ${JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}`,
        );
    },
  });
  console.log(`[${stamp()}] vmm: machine created`);
  try {
    console.log(
      `vmm: bars ${pc.bars.map((b) => `${b.slot}.${b.fn} bar${b.bar} ${b.type} 0x${b.address.toString(16)}+0x${b.size.toString(16)}`).join(', ')}`,
    );
    const reboots = Number(arg('reboots', '0'));
    for (let boot = 0; ; boot++) {
      const exit = await pc.run({ timeoutMs: Number(arg('timeout', '120')) * 1000 });
      console.log(
        `[${stamp()}] vmm: exit ${JSON.stringify(exit, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}`,
      );
      console.log(`vmm: reports ${JSON.stringify(pc.reportCounts)}, unserved exits ${pc.unservedExits}`);
      if (exit.reason !== 'reset' || boot >= reboots) break;
      pc.reboot();
    }
  } finally {
    pc.close();
    console.log(`vmm: after close ${JSON.stringify(pc.resources())}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
