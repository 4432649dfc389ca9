import * as fs from 'node:fs';

import type { PciIrqType, VfioPciDevice } from '../../../lib/pci';

/** One delivered interrupt, as the listener saw it. */
export type Delivery = [vector: number, count: number, type: PciIrqType];

/** Subscribes to `dev`'s interrupts, collecting every delivery. */
export function collect(dev: VfioPciDevice): { got: Delivery[]; stop(): void } {
  const got: Delivery[] = [];
  const fn = (v: number, n: number, t: PciIrqType): void => {
    got.push([v, n, t]);
  };
  dev.irq.on('interrupt', fn);
  return { got, stop: () => dev.irq.off('interrupt', fn) };
}

/** Lets the event loop run for `ms` milliseconds. */
export function settle(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `cond()` holds, letting the loop run; fails after `ms`. */
export async function until(cond: () => boolean, ms = 10000, what = 'the condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await settle(5);
  }
}

/** PCI command bits. */
export const CMD_DECODE_MASTER = 0x0007;
export const CMD_INTX_DISABLE = 0x0400;

/** edu's registers (QEMU docs/specs/edu.txt). */
export const EDU = { status: 0x24, raise: 0x60, ack: 0x64 } as const;

/** The first capability of `id` in the guest's view of config space. */
export function capOffset(dev: VfioPciDevice, id: number): number {
  const c = dev.capabilities.find((x) => !x.extended && x.id === id);
  if (!c) throw new Error(`${dev.bdf} has no capability ${id}`);
  return c.offset;
}

/** Programs and enables MSI (one vector, 64-bit capable or not) the way a guest driver does. */
export function enableMsi(dev: VfioPciDevice, address = 0xfee00000, data = 0x4021): void {
  const msi = dev.irq.msi;
  if (!msi) throw new Error(`${dev.bdf} has no MSI`);
  const cap = msi.capOffset;
  dev.configWrite(cap + 4, 4, address);
  if (msi.is64) dev.configWrite(cap + 8, 4, 0);
  dev.configWrite(msi.dataOffset, 2, data);
  dev.configWrite(cap + 2, 2, dev.configRead(cap + 2, 2) | 1);
}

/**
 * How many interrupts the (guest) kernel has taken for the vfio-pci vector named `name`, e.g.
 * `vfio-msi[0](0000:00:03.0)`, summed over CPUs from /proc/interrupts; 0 when it is not listed.
 */
export function kernelIrqCount(name: string): number {
  for (const line of fs.readFileSync('/proc/interrupts', 'utf8').split('\n')) {
    if (!line.trimEnd().endsWith(name)) continue;
    let n = 0;
    for (const f of line.trim().split(/\s+/).slice(1)) {
      if (!/^\d+$/.test(f)) break;
      n += Number(f);
    }
    return n;
  }
  return 0;
}
