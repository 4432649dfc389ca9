/**
 * Linux's x86 boot protocol for a bzImage (Documentation/arch/x86/boot.rst), done the way a VMM
 * that skips firmware does it: the protected-mode kernel copied to its load address, boot_params
 * (the "zero page") filled from the image's setup header, the command line and the initramfs placed,
 * the e820 map handed over, and the vCPU state for the 32- or 64-bit entry point returned as data.
 *
 * Low guest memory, as laid out here:
 *   0x00500  boot GDT                      0x07000  boot_params (zero page)
 *   0x08ff0  boot stack (grows down)       0x09000  page tables, 0x9000-0xefff (64-bit entry)
 *   0x20000  command line                  0x9fc00  MP table (see mptable.ts), up to 640 KiB
 *   pref_address (16 MiB for x86-64)       the kernel, init_size bytes
 *   top of RAM below 4 GiB / initrd_addr_max   the initramfs, page-aligned, as high as it fits
 */
import { runSteps } from '../../base/steps';
import { ArgTypeError } from '../../base/error';
import { VmmError } from '../errors';
import { bootRamOf, type BootRam } from './boot-ram';
import { CAN_USE_HEAP, parseBzImage, SETUP_HEADER_OFFSET, type SetupHeader, XLF_KERNEL_64 } from './bzimage';
import { type BootCpuState, writeBootCpuState } from './cpu-state';
import { E820_ENTRY_SIZE, type E820Entry, isE820Ram, writeE820 } from './e820';

/** Where the boot_params ("zero page") go in guest RAM. */
export const ZERO_PAGE_ADDR = 0x7000;
/** Where the kernel command line goes in guest RAM. */
export const CMDLINE_ADDR = 0x20000;
/** The command line area runs up to the EBDA/MP table; the kernel's own limit is usually lower. */
const CMDLINE_AREA_END = 0x9fc00;
const PAGE = 4096;
const LOW_KERNEL_ADDR = 0x100000;

// boot_params offsets outside the setup header.
const BP_EXT_RAMDISK_IMAGE = 0x0c0;
const BP_EXT_RAMDISK_SIZE = 0x0c4;
const BP_EXT_CMD_LINE_PTR = 0x0c8;
const BP_E820_ENTRIES = 0x1e8;
const BP_E820_TABLE = 0x2d0;
// Setup header fields a loader writes.
const HDR_VID_MODE = 0x1fa;
const HDR_TYPE_OF_LOADER = 0x210;
const HDR_LOADFLAGS = 0x211;
const HDR_CODE32_START = 0x214;
const HDR_RAMDISK_IMAGE = 0x218;
const HDR_RAMDISK_SIZE = 0x21c;
const HDR_HEAP_END_PTR = 0x224;
const HDR_CMD_LINE_PTR = 0x228;

/** Options of {@link loadLinux}. */
export interface LinuxBootOptions {
  /**
   * Guest RAM below the PCI hole from address 0: all of it as bytes indexed by guest-physical
   * address, or a {@link BootRam} that hands out a window per piece written.
   */
  readonly ram: Uint8Array | BootRam;
  /** The bzImage file. */
  readonly kernel: Uint8Array;
  /** The kernel command line (UTF-8, no NUL; at most the kernel's `cmdlineSize` bytes). */
  readonly cmdline: string;
  /** The initramfs file (a cpio, compressed or not), if any. */
  readonly initrd?: Uint8Array;
  /** The memory map the guest gets (see `pcE820`); the kernel and initramfs must land in its RAM. */
  readonly e820: readonly E820Entry[];
  /** Which entry point: '64' (default; needs protocol 2.12 and XLF_KERNEL_64) or '32'. */
  readonly mode?: '64' | '32';
}

/** Where {@link loadLinux} put everything, and the vCPU state to start it. */
export interface LinuxBootLayout {
  /** The bzImage's setup header, as parsed. */
  readonly header: SetupHeader;
  /** The protected-mode kernel in guest RAM. */
  readonly kernel: {
    /** Load address (guest-physical): the kernel's preferred address, or 1 MiB. */
    readonly addr: number;
    /** Bytes copied from the image. */
    readonly size: number;
    /** Bytes reserved from `addr` for the kernel to decompress and start in (at least `size`). */
    readonly initSize: number;
  };
  /** The initramfs in guest RAM, or null when none was given (or it was empty). */
  readonly initrd: {
    /** Guest-physical address, page-aligned, as high as the kernel and RAM allow. */
    readonly addr: number;
    /** Length in bytes. */
    readonly size: number;
  } | null;
  /** The command line in guest RAM. */
  readonly cmdline: {
    /** Guest-physical address ({@link CMDLINE_ADDR}). */
    readonly addr: number;
    /** Length in bytes, with the terminating NUL. */
    readonly size: number;
  };
  /** Guest-physical address of boot_params ({@link ZERO_PAGE_ADDR}). */
  readonly zeroPage: number;
  /** The vCPU state for the kernel's entry. */
  readonly cpu: BootCpuState;
}

/**
 * loadLinux: boots `kernel` into `ram` per the Linux x86 boot protocol and returns the layout and
 * the vCPU state for its entry. Bad inputs are VmmErrors: ENOTBZIMAGE/EPROTOCOL for the image,
 * ECMDLINE for a command line the kernel cannot take, ENOSPACE when something does not fit in RAM
 * (or lands outside the e820 map's RAM), EE820 for a malformed map.
 */
export function loadLinux(opts: LinuxBootOptions): LinuxBootLayout {
  return runSteps(loadLinuxSteps(opts));
}

/**
 * loadLinuxSteps: {@link loadLinux} in steps (everything checked, then the kernel copied, then the
 * initramfs, then the command line, the zero page and the CPU state), for a caller that gives the
 * event loop a turn between them. Nothing is written before every check passed. @internal
 */
export function* loadLinuxSteps(opts: LinuxBootOptions): Generator<'kernel' | 'initrd', LinuxBootLayout> {
  const { kernel, cmdline } = opts;
  const ram = bootRamOf(opts.ram, 'loadLinux');
  if (typeof cmdline !== 'string') throw new ArgTypeError('loadLinux: cmdline must be a string');
  if (opts.initrd !== undefined && !(opts.initrd instanceof Uint8Array)) {
    throw new ArgTypeError('loadLinux: initrd must be a Uint8Array');
  }
  const mode = opts.mode ?? '64';
  const hdr = parseBzImage(kernel);
  if (mode === '64' && (hdr.version < 0x020c || !(hdr.xloadflags & XLF_KERNEL_64))) {
    throw new VmmError(
      'EPROTOCOL',
      'the kernel has no 64-bit entry point (XLF_KERNEL_64, protocol 2.12)',
      "boot it with mode '32'",
    );
  }
  const e820 = [...opts.e820];
  const tmp = new Uint8Array(e820.length * E820_ENTRY_SIZE);
  writeE820(tmp, e820); // validates before anything is written into RAM

  // The command line.
  const cmd = Buffer.from(cmdline, 'utf8');
  if (cmd.includes(0)) throw new VmmError('ECMDLINE', 'the kernel command line contains a NUL byte');
  const cmdMax = Math.min(hdr.cmdlineSize, CMDLINE_AREA_END - CMDLINE_ADDR - 1);
  if (cmd.length > cmdMax) {
    throw new VmmError(
      'ECMDLINE',
      `the kernel command line is ${cmd.length} bytes; this kernel takes at most ${cmdMax}`,
    );
  }

  // The kernel: at its preferred address when it has one, or at 1 MiB.
  const loadAddr = hdr.prefAddress >= LOW_KERNEL_ADDR ? hdr.prefAddress : LOW_KERNEL_ADDR;
  const initSize = Math.max(hdr.initSize, hdr.kernelSize);
  const kernelEnd = loadAddr + initSize;
  if (kernelEnd > ram.length || !isE820Ram(e820, loadAddr, initSize)) {
    throw new VmmError(
      'ENOSPACE',
      `the kernel needs RAM at 0x${loadAddr.toString(16)}-0x${kernelEnd.toString(16)} (init_size ${initSize}); guest RAM below the PCI hole ends at 0x${ram.length.toString(16)}`,
      'give the guest more memory',
    );
  }

  // The initramfs: as high as the kernel allows and RAM reaches, above the kernel.
  let initrd: LinuxBootLayout['initrd'] = null;
  if (opts.initrd && opts.initrd.length > 0) {
    const size = opts.initrd.length;
    const top = Math.min(ram.length, hdr.initrdAddrMax + 1, highestRamEnd(e820, ram.length));
    const addr = Math.floor((top - size) / PAGE) * PAGE;
    if (addr < alignUp(kernelEnd, PAGE) || !isE820Ram(e820, addr, size)) {
      throw new VmmError(
        'ENOSPACE',
        `the ${size}-byte initramfs does not fit between the kernel's end (0x${kernelEnd.toString(16)}) and 0x${top.toString(16)}`,
        'give the guest more memory',
      );
    }
    initrd = { addr, size };
  }

  // Everything checked: write, each piece through a window of its own size.
  const payload = kernel.subarray(hdr.kernelOffset);
  ram.bytes(loadAddr, payload.length).set(payload);
  yield 'kernel';
  if (initrd && opts.initrd) {
    ram.bytes(initrd.addr, initrd.size).set(opts.initrd);
    yield 'initrd';
  }
  const cmdArea = ram.bytes(CMDLINE_ADDR, cmd.length + 1);
  cmdArea.fill(0);
  cmdArea.set(cmd);

  const zp = ram.bytes(ZERO_PAGE_ADDR, PAGE);
  zp.fill(0);
  zp.set(kernel.subarray(SETUP_HEADER_OFFSET, SETUP_HEADER_OFFSET + hdr.headerLength), SETUP_HEADER_OFFSET);
  const v = new DataView(zp.buffer, zp.byteOffset, PAGE);
  v.setUint16(HDR_VID_MODE, 0xffff, true); // "normal"
  v.setUint8(HDR_TYPE_OF_LOADER, 0xff); // no registered loader ID
  v.setUint8(HDR_LOADFLAGS, hdr.loadflags | CAN_USE_HEAP);
  v.setUint16(HDR_HEAP_END_PTR, 0xfe00, true);
  v.setUint32(HDR_CODE32_START, loadAddr, true);
  v.setUint32(HDR_CMD_LINE_PTR, CMDLINE_ADDR, true);
  v.setUint32(BP_EXT_CMD_LINE_PTR, 0, true);
  if (initrd) {
    v.setUint32(HDR_RAMDISK_IMAGE, initrd.addr % 2 ** 32, true);
    v.setUint32(HDR_RAMDISK_SIZE, initrd.size % 2 ** 32, true);
    v.setUint32(BP_EXT_RAMDISK_IMAGE, Math.floor(initrd.addr / 2 ** 32), true);
    v.setUint32(BP_EXT_RAMDISK_SIZE, Math.floor(initrd.size / 2 ** 32), true);
  }
  v.setUint8(BP_E820_ENTRIES, writeE820(zp.subarray(BP_E820_TABLE), e820));

  const entry = mode === '64' ? loadAddr + 0x200 : loadAddr;
  const cpu = writeBootCpuState(ram, mode, entry, ZERO_PAGE_ADDR);
  return {
    header: hdr,
    kernel: { addr: loadAddr, size: hdr.kernelSize, initSize },
    initrd,
    cmdline: { addr: CMDLINE_ADDR, size: cmd.length + 1 },
    zeroPage: ZERO_PAGE_ADDR,
    cpu,
  };
}

/** The end of the e820 RAM entry that holds the top of `limit`'s range, or `limit`. */
function highestRamEnd(e820: readonly E820Entry[], limit: number): number {
  let best = 0;
  for (const e of e820) {
    if (e.type !== 1) continue;
    best = Math.max(best, Math.min(e.addr + e.size, limit));
  }
  return best;
}

function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}
