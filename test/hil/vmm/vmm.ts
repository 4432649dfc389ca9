// What the Node VMM's lab tests share: the guest's kernel and initramfs (named by scripts/lab), the
// huge page pool guest RAM comes from, and the check that a closed machine holds nothing.
import * as fs from 'node:fs';
import type { IntervalHistogram } from 'node:perf_hooks';
import type { PcMachine } from '../../../lib';

export const KERNEL = process.env.VFIO_BRIDGE_VMM_KERNEL;
export const INITRD = process.env.VFIO_BRIDGE_VMM_INITRD;
const HUGEPAGES = '/proc/sys/vm/nr_hugepages';
// 256 MiB of guest RAM in 2 MiB pages, and a few to spare.
const POOL = 136;

/** In beforeAll/afterAll: the guest inputs are there, and a huge page pool for the test's RAM. */
export function useVmmGuest(): void {
  let before = '';
  beforeAll(() => {
    if (!KERNEL || !INITRD)
      throw new Error('VFIO_BRIDGE_VMM_KERNEL/INITRD are not set: run through scripts/lab');
    before = fs.readFileSync(HUGEPAGES, 'utf8').trim();
    fs.writeFileSync(HUGEPAGES, String(Math.max(Number(before), POOL)));
  });
  afterAll(() => {
    if (before !== '') fs.writeFileSync(HUGEPAGES, before);
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
