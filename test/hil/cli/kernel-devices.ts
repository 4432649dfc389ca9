/**
 * Devices on a real kernel driver, for the tests that move devices between drivers.
 *
 * `VFIO_BRIDGE_HIL_KERNEL_DEVICES` lists them as `driver=BDF` pairs separated by commas (the lab
 * sets `e1000=0000:00:08.0`). Each must be on that driver when the tests start, and is put back
 * on it at the end. Unlisted drivers skip their tests with the reason, except in CI, where they fail.
 */
import * as fs from 'node:fs';

import { inCi } from '../hil';

const spec = process.env.VFIO_BRIDGE_HIL_KERNEL_DEVICES ?? '';
const listed = new Map(
  spec
    .split(',')
    .filter((s) => s.trim() !== '')
    .map((s) => {
      const [driver, bdf] = s.trim().split('=');
      if (!driver || !bdf) throw new TypeError(`VFIO_BRIDGE_HIL_KERNEL_DEVICES: '${s}' is not driver=BDF`);
      return [driver, bdf.toLowerCase()] as const;
    }),
);

/** The driver `bdf` is on now (null: none). */
export function driverNow(bdf: string): string | null {
  try {
    return fs.readlinkSync(`/sys/bus/pci/devices/${bdf}/driver`).split('/').pop()!;
  } catch {
    return null;
  }
}

/** describe() for tests that need a device on kernel driver `driver`. */
export function describeKernelDevice(driver: string, name: string, body: (bdf: string) => void): void {
  const bdf = listed.get(driver);
  if (bdf !== undefined) {
    describe(`${driver} ${bdf}: ${name}`, () => body(bdf));
    return;
  }
  const reason = `VFIO_BRIDGE_HIL_KERNEL_DEVICES lists no ${driver} device`;
  describe(`${driver}: ${name}`, () => {
    if (inCi) {
      test('has its device (mandatory in CI)', () => {
        throw new Error(`${reason}; in CI the lab must provide it`);
      });
    } else test.skip(`skipped: ${reason}`, () => undefined);
  });
}
