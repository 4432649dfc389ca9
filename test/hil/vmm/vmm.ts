// What the Node VMM's lab tests share: the guest's kernel and initramfs (named by scripts/lab), the
// huge page pool guest RAM comes from, and the check that a closed machine holds nothing.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import type { IntervalHistogram } from 'node:perf_hooks';
import type { PcExit, PcMachine } from '../../../lib';
import { watchLoop } from '../loop-watchdog';

export const KERNEL = process.env.VFIO_BRIDGE_VMM_KERNEL;
export const INITRD = process.env.VFIO_BRIDGE_VMM_INITRD;
const HUGEPAGES = '/proc/sys/vm/nr_hugepages';
// 256 MiB of guest RAM in 2 MiB pages, and a few to spare.
const POOL = 136;

/**
 * In beforeAll/afterAll: the guest inputs are there, a huge page pool for the test's RAM, and a
 * watchdog that describes the process's threads if its event loop stops (loop-watchdog.ts).
 */
export function useVmmGuest(): void {
  let before = '';
  let unwatch: (() => Promise<void>) | null = null;
  beforeAll(() => {
    unwatch = watchLoop(expect.getState().testPath ?? 'a VMM test');
    if (!KERNEL || !INITRD)
      throw new Error('VFIO_BRIDGE_VMM_KERNEL/INITRD are not set: run through scripts/lab');
    before = fs.readFileSync(HUGEPAGES, 'utf8').trim();
    fs.writeFileSync(HUGEPAGES, String(Math.max(Number(before), POOL)));
  });
  afterAll(async () => {
    if (before !== '') fs.writeFileSync(HUGEPAGES, before);
    await unwatch?.();
  });
}

/** A closed machine holds no slot, irqfd, ioeventfd, DMA mapping, device or vCPU. */
export function expectNothingHeld(pc: PcMachine): void {
  expect(pc.resources()).toEqual({
    memorySlots: 0,
    irqfds: 0,
    ioeventfds: 0,
    dmaMappings: 0,
    openDevices: 0,
    vcpus: 0,
  });
}

/** How late (ms) a 10 ms event-loop sampling timer fired at the median: Node records whole intervals. */
export function medianLateMs(h: IntervalHistogram): number {
  return Math.max(0, h.percentile(50) / 1e6 - 10);
}

/** One of this process's threads as the kernel shows it. */
function threadLine(tid: string): string {
  const at = `/proc/self/task/${tid}`;
  try {
    const comm = fs.readFileSync(`${at}/comm`, 'utf8').trim();
    const wchan = fs.readFileSync(`${at}/wchan`, 'utf8').trim();
    // After the comm's closing parenthesis: state, ..., utime (12th), stime (13th).
    const stat = fs.readFileSync(`${at}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return `${tid} ${comm} ${f[0]} wchan=${wchan || '-'} cpu=${f[11]}+${f[12]}`;
  } catch {
    return `${tid} gone`;
  }
}

/** This process's KVM VMs' counters in debugfs, mounted first if need be (none without debugfs). */
function kvmCounters(): string[] {
  const root = '/sys/kernel/debug/kvm';
  try {
    if (!fs.readFileSync('/proc/mounts', 'utf8').includes(' /sys/kernel/debug debugfs '))
      execFileSync('mount', ['-t', 'debugfs', 'debugfs', '/sys/kernel/debug'], { stdio: 'ignore' });
  } catch {
    // best effort: the threads' lines say most of it
  }
  const names = ['exits', 'halt_exits', 'halt_wakeup', 'irq_injections', 'irq_exits', 'signal_exits'];
  const out: string[] = [];
  try {
    for (const vm of fs.readdirSync(root).filter((d) => d.startsWith(`${process.pid}-`))) {
      const c = names.map((n) => {
        try {
          return `${n}=${fs.readFileSync(`${root}/${vm}/${n}`, 'utf8').trim()}`;
        } catch {
          return `${n}=?`;
        }
      });
      out.push(`kvm ${vm} ${c.join(' ')}`);
    }
  } catch {
    // no debugfs
  }
  return out;
}

/**
 * What a machine whose guest went quiet was doing: this process's threads (the vCPU threads' wait
 * channels say whether they wait in the guest, for an answer or parked), each vCPU thread's state
 * and counters against the exits JavaScript served, and KVM's counters, twice a few seconds apart.
 * Armed at `afterMs` into a run; the lines are for the test to print when its guest timed out.
 */
export function watchStall(pc: PcMachine, afterMs: number): { lines: string[]; cancel(): void } {
  const lines: string[] = [];
  const snap = (label: string): void => {
    lines.push(`--- ${label} at ${new Date().toISOString()}`);
    for (const tid of fs.readdirSync('/proc/self/task')) lines.push(threadLine(tid));
    for (const v of pc.vcpus)
      lines.push(`vcpu ${v.id} ${v.thread?.state ?? 'no thread'} ${JSON.stringify(v.thread?.stats)}`);
    lines.push(`exits ${JSON.stringify(pc.exits)}`);
    lines.push(...kvmCounters());
  };
  const timers: NodeJS.Timeout[] = [];
  timers.push(
    setTimeout(() => {
      snap('first look');
      timers.push(setTimeout(() => snap('5 s later'), 5000).unref());
    }, afterMs).unref(),
  );
  return { lines, cancel: () => timers.forEach(clearTimeout) };
}

/** The paused vCPUs' registers and local APIC timer, for a guest that timed out. */
export function vcpuPicture(pc: PcMachine): string[] {
  const out: string[] = [];
  for (const v of pc.vcpus) {
    try {
      const r = v.getRegs();
      const apic = v.getLapic();
      const reg = (off: number): string => apic.readUInt32LE(off).toString(16);
      const bits = (base: number): string =>
        [0, 1, 2, 3, 4, 5, 6, 7].map((i) => apic.readUInt32LE(base + i * 16).toString(16)).join(':');
      out.push(
        `vcpu ${v.id} rip=${r.rip.toString(16)} rflags=${r.rflags.toString(16)} ` +
          `lvtt=${reg(0x320)} tmict=${reg(0x380)} tmcct=${reg(0x390)} tpr=${reg(0x80)} ` +
          `isr=${bits(0x100)} irr=${bits(0x200)}`,
      );
    } catch (e) {
      out.push(`vcpu ${v.id}: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * pc.run with the stall watch armed 10 s before the timeout; when the guest did not end by
 * resetting, what the watch saw and the paused vCPUs' state are printed before the test fails.
 */
export async function runWatched(pc: PcMachine, timeoutMs: number): Promise<PcExit> {
  const stall = watchStall(pc, timeoutMs - 10_000);
  const exit = await pc.run({ timeoutMs });
  stall.cancel();
  if (exit.reason !== 'reset') {
    console.log(
      ['guest errors', JSON.stringify(pc.guestErrors.counts), 'exits', JSON.stringify(pc.exits)].join(' '),
    );
    console.log([...stall.lines, ...vcpuPicture(pc)].join('\n'));
  }
  return exit;
}
