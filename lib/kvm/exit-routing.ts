import { allOnes } from '../base/values';
import type { AccessSize, AddressSpace } from '../memory';

/** Where MMIO and port exits are served. */
export interface ExitRouting {
  /** Guest-physical MMIO (e.g. a SystemAddressSpaces' `memory`). */
  memory: AddressSpace;
  /** Guest port I/O (e.g. a SystemAddressSpaces' `io`). */
  io?: AddressSpace;
  /** Hears each routed access after it was served (`value`: what a read returned). */
  onAccess?(a: RoutedAccess): void;
  /** Checked after each exit of a bounded run: true ends the run with `stopped`. */
  stop?(): boolean;
}

/** A routed MMIO or port access. */
export interface RoutedAccess {
  /** `memory` for an MMIO exit, `io` for a port exit. */
  space: 'memory' | 'io';
  /** Guest-physical address or port of the access. */
  address: number;
  /** Length in bytes, 1 to 8. */
  size: number;
  /** True for a write. */
  isWrite: boolean;
  /** The value written, or what the read returned (all-ones when no space could serve it). */
  value: number | bigint;
}

/**
 * routeAccess: serve one MMIO or port access on `routing`'s address spaces, as one access of the
 * guest's size (odd sizes, which KVM makes of an access split at a page boundary, byte by byte).
 * Returns what a read returns, or `value` for a write. Port I/O with no `io` space, and string
 * port I/O (`count` > 1), cannot be served: they read all-ones, drop writes, and `unserved` hears
 * them (a guest chooses them, so they are never thrown).
 */
export function routeAccess(
  routing: ExitRouting,
  isMmio: boolean,
  address: number,
  size: number,
  isWrite: boolean,
  count: number,
  value: number | bigint,
  unserved: (isMmio: boolean, address: number, count: number) => void,
): number | bigint {
  const space = isMmio ? routing.memory : routing.io;
  let result: number | bigint = value;
  if (space === undefined || count !== 1) {
    unserved(isMmio, address, count);
    if (!isWrite) result = allOnes(size);
  } else if (isWrite) {
    writeSpace(space, address, size, value);
  } else {
    result = readSpace(space, address, size);
  }
  routing.onAccess?.({ space: isMmio ? 'memory' : 'io', address, size, isWrite, value: result });
  return result;
}

function readSpace(space: AddressSpace, address: number, size: number): number | bigint {
  if (size === 1 || size === 2 || size === 4 || size === 8) return space.read(address, size as AccessSize);
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(space.read(address + i, 1) as number);
  return v;
}

function writeSpace(space: AddressSpace, address: number, size: number, value: number | bigint): void {
  if (size === 1 || size === 2 || size === 4 || size === 8) {
    space.write(address, size as AccessSize, value);
    return;
  }
  const v = BigInt(value);
  for (let i = 0; i < size; i++) space.write(address + i, 1, Number((v >> BigInt(8 * i)) & 0xffn));
}
