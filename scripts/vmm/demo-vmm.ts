/**
 * The demo's last section: the Node VMM (lib/vmm's PcMachine) boots Linux with the lab's e1000e and
 * rtl8139 passed through (scripts/vmm/node-vmm.ts), and the demo shows the guest's own view: its
 * drivers, links, ping results and interrupt counts, then what the machine held after close.
 *
 * `npm run lab`'s demo (scripts/lab/demo.ts) runs it as its own process, compiled to build/vmm with
 * the other runners: `node build/vmm/demo-vmm.js role=BDF,...`. The event loop it shows beside the
 * guest's lines is then a VMM's as a user would run it, with no TypeScript compiler in its heap.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { isSummaryLine, parseGuestConsole } from './guest-console';

const HUGEPAGES = '/proc/sys/vm/nr_hugepages';
/** Guest RAM (MiB), and the 2 MiB pages it takes with some slack. */
const MEM_MIB = 256;
const POOL = MEM_MIB / 2 + 8;
const PINGS = 5;

/**
 * Sizes the huge page pool for the guest's RAM, as bench:vmm does (the lab guest is ours), and
 * returns how to put it back; null when it cannot (the guest then runs on small pages).
 */
function hugePagePool(): (() => void) | null {
  try {
    const before = fs.readFileSync(HUGEPAGES, 'utf8').trim();
    if (Number(before) < POOL) fs.writeFileSync(HUGEPAGES, String(POOL));
    const free = /HugePages_Free:\s*(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    const restore = (): void => fs.writeFileSync(HUGEPAGES, before);
    if (Number(free?.[1] ?? 0) >= MEM_MIB / 2) return restore;
    restore();
  } catch {
    // Not root, or no hugetlb: small pages.
  }
  return null;
}

/** Boots the VMM guest and prints its summary; needs e1000e and rtl8139 in `devices`. */
export async function vmmGuestSection(devices: ReadonlyMap<string, string>): Promise<void> {
  console.log(
    "\nLinux under the Node VMM (PcMachine): the guest's own drivers on the passed-through e1000e and rtl8139",
  );
  const kernel = process.env.VFIO_BRIDGE_VMM_KERNEL;
  const initrd = process.env.VFIO_BRIDGE_VMM_INITRD;
  const e1000e = devices.get('e1000e');
  const rtl8139 = devices.get('rtl8139');
  if (!kernel || !initrd) {
    console.log('  skipped: VFIO_BRIDGE_VMM_KERNEL/INITRD are not set (scripts/lab/lab.sh provisions them)');
    return;
  }
  if (!e1000e || !rtl8139) {
    console.log('  skipped: needs e1000e and rtl8139');
    return;
  }
  if (!fs.existsSync(path.join(__dirname, '../../dist/index.js'))) {
    console.log('  skipped: the Node VMM runs the compiled package; run: npm run build');
    process.exitCode = 1;
    return;
  }
  // Loaded here, so a demo without dist/ still shows everything before this section.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { runVmmGuest, describeLoop } = require('./node-vmm') as typeof import('./node-vmm');
  const restorePool = hugePagePool();
  console.log(
    `  ${MEM_MIB} MiB of guest RAM on ${restorePool ? '2 MiB huge pages' : 'small pages (no huge page pool)'}, ` +
      `e1000e ${e1000e} (MSI-X on irqfds), rtl8139 ${rtl8139} (8139cp, INTx on a resample irqfd), ${PINGS} pings each`,
  );
  // Where the vCPU thread and the event loop share the lab's one CPU, the vCPU thread runs at nice
  // 10 (PcMachine's vcpuNice), so that the loop preempts it as soon as it has work, as docs/vmm.md
  // advises for a VMM whose vCPUs do not have CPUs of their own.
  const shared = os.availableParallelism() === 1;
  if (shared) console.log('  one CPU for the vCPU thread and the event loop: the vCPU thread at nice 10');
  // How late a 10 ms timer fired since the previous guest line.
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  try {
    const r = await runVmmGuest({
      kernel,
      initrd,
      e1000e,
      rtl8139,
      rtl: '8139cp',
      pings: PINGS,
      memMiB: MEM_MIB,
      hugepages: restorePool !== null,
      timeoutMs: 120_000,
      ...(shared ? { vcpuNice: 10 } : {}),
      onLine: ({ t, text }) => {
        // The event loop beside the guest's output: the vCPUs run on their own threads.
        const late = Math.max(0, loop.max / 1e6 - 10).toFixed(1);
        if (isSummaryLine(text))
          console.log(`  [${t.toFixed(1).padStart(5)} s] ${text}  (event loop: late at most ${late} ms)`);
        loop.reset();
      },
      onEvent: (text) => {
        if (/^(machine created|exit at|report)/.test(text)) console.log(`  vmm: ${text}`);
      },
    });
    const run = parseGuestConsole(r.lines);
    const e = r.servedExits;
    console.log(
      `  drivers bound ${run.bound?.toFixed(1) ?? '-'} s after start; ${e.mmio} MMIO and ${e.io} port I/O exits served in JS, ${e.nativeMmio} and ${e.nativeIo} on the vCPU threads`,
    );
    console.log(`  after close: ${JSON.stringify(r.resources)}`);
    console.log(`  ${describeLoop(r.loop)}`);
    const answered = run.pings.find((p) => p.drv === 'e1000e')?.rtts.length ?? 0;
    const left = Object.entries(r.resources).filter(([, n]) => n !== 0);
    if (run.bound === undefined || run.failures.length > 0 || answered === 0 || left.length > 0) {
      console.log(
        '  WRONG: the guest did not bind both drivers and get answers, or the machine left something behind',
      );
      process.exitCode = 1;
    }
  } finally {
    loop.disable();
    restorePool?.();
  }
}

if (require.main === module) {
  // role=BDF,... as VFIO_BRIDGE_HIL_DEVICES gives them.
  const devices = new Map(
    (process.argv[2] ?? '')
      .split(',')
      .filter((s) => s.includes('='))
      .map((s) => s.trim().split('=') as [string, string]),
  );
  vmmGuestSection(devices).catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
