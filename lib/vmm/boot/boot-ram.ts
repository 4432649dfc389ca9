/**
 * Guest RAM as the boot loaders write it: a window of exactly the bytes each piece takes (the zero
 * page, the command line, the kernel, the initramfs, the MP table, the GDT and page tables), so
 * loading Linux into a machine's RAM never shows all of it as one ArrayBuffer.
 */
import { ArgRangeError, ArgTypeError } from '../../base/error';

/** Guest RAM from guest-physical address 0, written one exact-size window at a time. */
export interface BootRam {
  /** Bytes of RAM from address 0 (the RAM below the PCI hole). */
  readonly length: number;
  /** A writable view of exactly [gpa, gpa + length), which must lie in [0, this.length). */
  bytes(gpa: number, length: number): Uint8Array;
}

/**
 * bootRamOf: `ram` as a {@link BootRam}: a Uint8Array (indexed by guest-physical address) is cut
 * into subarrays; a BootRam is taken as it is. `who` names the caller in a TypeError.
 */
export function bootRamOf(ram: Uint8Array | BootRam, who: string): BootRam {
  if (ram instanceof Uint8Array) return new BytesBootRam(ram);
  if (
    ram === null ||
    typeof ram !== 'object' ||
    typeof ram.length !== 'number' ||
    typeof ram.bytes !== 'function'
  ) {
    throw new ArgTypeError(`${who}: ram must be a Uint8Array or a BootRam (length, bytes(gpa, length))`);
  }
  return ram;
}

/**
 * checkBootWindow: throws unless [gpa, gpa + length) lies in RAM of `ramLength` bytes from address
 * 0, naming the window and the end of RAM.
 */
export function checkBootWindow(gpa: number, length: number, ramLength: number): void {
  if (!(Number.isSafeInteger(gpa) && gpa >= 0 && Number.isSafeInteger(length) && length >= 0)) {
    throw new ArgRangeError(
      `boot window at ${String(gpa)} of ${String(length)} bytes: both must be non-negative integers`,
    );
  }
  if (gpa > ramLength || length > ramLength - gpa) {
    throw new ArgRangeError(
      `boot window [0x${gpa.toString(16)}, +${length}) is outside guest RAM, which ends at 0x${ramLength.toString(16)}`,
    );
  }
}

/** A BootRam over one Uint8Array holding all of RAM from address 0. */
class BytesBootRam implements BootRam {
  constructor(private readonly ram: Uint8Array) {}

  get length(): number {
    return this.ram.length;
  }

  bytes(gpa: number, length: number): Uint8Array {
    checkBootWindow(gpa, length, this.ram.length);
    return this.ram.subarray(gpa, gpa + length);
  }
}
