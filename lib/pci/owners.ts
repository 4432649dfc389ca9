/**
 * Which VfioPciDevice drives each VFIO device: two on one device would both program it, each with
 * its own idea of the BARs, the command register and MSI-X.
 */
import { VfioError } from '../base/error';
import type { VfioDeviceLike } from './types';

interface Owner {
  readonly bdf: string;
  readonly closed: boolean;
  readonly bus: unknown;
}

const owners = new WeakMap<VfioDeviceLike, Owner>();

/** Throws VfioError EBUSY naming the VfioPciDevice that already drives `device`. */
export function checkUndriven(device: VfioDeviceLike, bus: unknown): void {
  const o = owners.get(device);
  if (o === undefined || o.closed) return;
  throw new VfioError({
    message: `VfioPciDevice.open: ${o.bdf} is already driven by an open VfioPciDevice on ${o.bus === bus ? 'this' : 'another'} SystemAddressSpaces`,
    code: 'EBUSY',
    op: 'VfioPciDevice.open',
    bdf: o.bdf,
    hint: 'one VfioPciDevice per device: use the one already open, or close it before opening another',
  });
}

/** Records `owner` as the driver of `device` until it closes. */
export function claim(device: VfioDeviceLike, owner: Owner): void {
  owners.set(device, owner);
}
