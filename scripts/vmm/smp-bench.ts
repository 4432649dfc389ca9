/**
 * npm run bench:smp [-- --nice N] (in the lab): the Node VMM boots the VMM guest with 1, 2 and 4 vCPUs in one
 * run, each vCPU on its own thread, and prints the time to "drivers bound" of each as a ratio to
 * the one-vCPU time (target: at most 1.1x), with the event loop's delay over each machine's life.
 * In a lab guest of one CPU the vCPU threads cannot run in parallel, so this measures that more
 * vCPUs cost no serialisation (the sliced run loop took 2.3x with two), not a speed-up; with
 * `VFIO_BRIDGE_LAB_CPUS=2 npm run bench:smp` two of them can.
 */
import * as fs from 'node:fs';
import { parseGuestConsole } from './guest-console';
import { describeLoop, labBdf, runVmmGuest } from './node-vmm';

const MEM_MIB = 256;

async function main(): Promise<void> {
  const kernel = process.env.VFIO_BRIDGE_VMM_KERNEL;
  const initrd = process.env.VFIO_BRIDGE_VMM_INITRD;
  const e1000e = labBdf('e1000e');
  const rtl8139 = labBdf('rtl8139');
  if (!kernel || !initrd || !e1000e || !rtl8139)
    throw new Error('bench:smp runs in the lab: npm run bench:smp');
  fs.writeFileSync('/proc/sys/vm/nr_hugepages', String(MEM_MIB / 2 + 12));
  const at = process.argv.indexOf('--nice');
  const nice = at > 0 ? Number(process.argv[at + 1]) : 0;
  const rows: { cpus: number; bound: number; line: string }[] = [];
  for (const cpus of [1, 2, 4]) {
    const r = await runVmmGuest({
      kernel,
      initrd,
      e1000e,
      rtl8139,
      pings: 3,
      memMiB: MEM_MIB,
      cpus,
      vcpuNice: nice,
      hugepages: true,
      timeoutMs: 180_000,
    });
    const run = parseGuestConsole(r.lines);
    if (run.bound === undefined) throw new Error(`${cpus} vCPUs: the drivers never bound`);
    const online = r.lines.find((l) => / cpus online$/.test(l.text))?.text ?? '';
    rows.push({ cpus, bound: run.bound, line: `${online}; ${describeLoop(r.loop)}` });
  }
  const base = rows[0].bound;
  console.log(
    `bench:smp: time from PcMachine.create to both drivers bound, each vCPU on its own thread (nice ${nice})`,
  );
  for (const r of rows) {
    const ratio = r.bound / base;
    const verdict = r.cpus === 1 ? '' : ratio <= 1.1 ? '  target <= 1.1x: met' : '  target <= 1.1x: MISSED';
    console.log(
      `  ${r.cpus} vCPU${r.cpus > 1 ? 's' : ' '}  ${r.bound.toFixed(2).padStart(6)} s  ${ratio.toFixed(2)}x${verdict}`,
    );
    console.log(`           ${r.line}`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
