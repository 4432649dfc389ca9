import { ArgTypeError } from '../../base/error';
import { VmmError } from '../errors';
import { viewOf } from '../../base/values';

/** Offsets in a bzImage (and in boot_params, which embeds the same header at the same offset). */
export const SETUP_HEADER_OFFSET = 0x1f1;
const BOOT_FLAG = 0x1fe;
const JUMP = 0x200;
const HEADER_MAGIC = 0x202;
const HDRS = 0x53726448; // "HdrS"

/** loadflags bit 0: the protected-mode code is loaded at 0x100000 or above (every bzImage). */
export const LOADED_HIGH = 0x01;
/** loadflags bit 7: heap_end_ptr is valid. */
export const CAN_USE_HEAP = 0x80;
/** xloadflags bit 0: the kernel has the 64-bit entry point at its load address + 0x200. */
export const XLF_KERNEL_64 = 0x01;

/** The fields of a bzImage's setup header a loader needs (Documentation/arch/x86/boot.rst). */
export interface SetupHeader {
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  readonly version: number;
  /** 512-byte sectors of real-mode setup code after the boot sector. */
  readonly setupSects: number;
  /** The loadflags byte (0x211); {@link LOADED_HIGH} is always set in a bzImage. */
  readonly loadflags: number;
  /** The xloadflags word (0x236), e.g. {@link XLF_KERNEL_64}; 0 before protocol 2.12. */
  readonly xloadflags: number;
  /** The 32-bit entry point's default address (0x214), normally 0x100000. */
  readonly code32Start: number;
  /** Highest address the initramfs may end at (inclusive). */
  readonly initrdAddrMax: number;
  /** Alignment the kernel must be loaded at, in bytes (1 MiB before protocol 2.05). */
  readonly kernelAlignment: number;
  /** Whether the kernel may be loaded at any `kernelAlignment`-aligned address. */
  readonly relocatable: boolean;
  /** Longest command line, without its NUL. */
  readonly cmdlineSize: number;
  /** Where the kernel prefers to be loaded (0 before protocol 2.10). */
  readonly prefAddress: number;
  /** Bytes the kernel needs from its load address while it decompresses and starts. */
  readonly initSize: number;
  /** File offset of the protected-mode kernel. */
  readonly kernelOffset: number;
  /** Bytes of protected-mode kernel. */
  readonly kernelSize: number;
  /** Bytes of the setup header, from 0x1f1, that a loader copies into boot_params. */
  readonly headerLength: number;
}

/**
 * parseBzImage: the setup header of a bzImage, validated. A file that is not a bzImage is a
 * VmmError ENOTBZIMAGE; one whose protocol predates 2.06 (no cmdline_size, no relocation fields) is
 * EPROTOCOL.
 */
export function parseBzImage(image: Uint8Array): SetupHeader {
  if (!(image instanceof Uint8Array)) throw new ArgTypeError('parseBzImage needs a Uint8Array');
  if (image.length < 0x270) {
    throw new VmmError(
      'ENOTBZIMAGE',
      `the kernel image is ${image.length} bytes, too short for a setup header`,
    );
  }
  const v = viewOf(image);
  if (v.getUint16(BOOT_FLAG, true) !== 0xaa55 || v.getUint32(HEADER_MAGIC, true) !== HDRS) {
    throw new VmmError(
      'ENOTBZIMAGE',
      'the kernel image has no x86 boot sector and setup header (0xAA55 at 0x1fe, "HdrS" at 0x202)',
      'pass a bzImage such as /boot/vmlinuz-*, not an ELF vmlinux or a compressed archive',
    );
  }
  const version = v.getUint16(0x206, true);
  if (version < 0x0206) {
    throw new VmmError('EPROTOCOL', `the kernel's boot protocol ${protocol(version)} is older than 2.06`);
  }
  const loadflags = v.getUint8(0x211);
  if (!(loadflags & LOADED_HIGH)) {
    throw new VmmError('EPROTOCOL', 'the kernel is a zImage (loaded low), not a bzImage');
  }
  const setupSects = v.getUint8(SETUP_HEADER_OFFSET) || 4; // 0 meant 4 in old images
  const kernelOffset = (setupSects + 1) * 512;
  if (kernelOffset >= image.length) {
    throw new VmmError(
      'ENOTBZIMAGE',
      `the setup code (${setupSects} sectors) covers the whole ${image.length}-byte image`,
    );
  }
  const headerLength = HEADER_MAGIC + v.getUint8(JUMP + 1) - SETUP_HEADER_OFFSET;
  return {
    version,
    setupSects,
    loadflags,
    xloadflags: version >= 0x020c ? v.getUint16(0x236, true) : 0,
    code32Start: v.getUint32(0x214, true),
    initrdAddrMax: v.getUint32(0x22c, true) || 0x37ffffff, // protocol: unset means 0x37ffffff
    kernelAlignment: version >= 0x0205 ? v.getUint32(0x230, true) : 0x100000,
    relocatable: v.getUint8(0x234) !== 0,
    cmdlineSize: v.getUint32(0x238, true),
    prefAddress: version >= 0x020a ? Number(v.getBigUint64(0x258, true)) : 0,
    initSize: version >= 0x020a ? v.getUint32(0x260, true) : 0,
    kernelOffset,
    kernelSize: image.length - kernelOffset,
    headerLength: Math.min(headerLength, 0x290 - SETUP_HEADER_OFFSET),
  };
}

function protocol(version: number): string {
  return `${version >> 8}.${(version & 0xff).toString().padStart(2, '0')}`;
}
