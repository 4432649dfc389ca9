// The boot loaders write guest RAM through windows of exactly each piece's size (BootRam), and the
// image they leave is byte for byte the one they left when they wrote into one array of all RAM.
import { createHash } from 'node:crypto';

import {
  bootRamOf,
  checkBootWindow,
  loadLinux,
  MPTABLE_START,
  mpTableSize,
  pcE820,
  writeBootCpuState,
  writeMpTable,
  type BootRam,
  type IntxRoute,
} from '../../../lib/vmm';
import { bzImage } from './fake-bzimage';

const MIB = 2 ** 20;
const RAM = 64 * MIB;
const INTX: IntxRoute[] = [
  { slot: 2, fn: 0, pin: 1, gsi: 18 },
  { slot: 3, fn: 0, pin: 2, gsi: 20 },
];

/**
 * SHA-256 of the 64 MiB image below, as the loaders wrote it into one Uint8Array of all RAM before
 * they took windows (the same inputs, run on that code).
 */
const BEFORE = {
  '64': '2a5ff8918f0bf568f181393abbbdb327008de7a6a3570d2d0cd43b64492b5420',
  '32': 'bfee84729caef0eda21230ff285d016847bb7ea6bb8141f834c1b7dd77049fe2',
};

/** A BootRam over `ram` that records every window it hands out. */
function recording(ram: Uint8Array): BootRam & { windows: [number, number][] } {
  const windows: [number, number][] = [];
  return {
    windows,
    length: ram.length,
    bytes(gpa, length) {
      windows.push([gpa, length]);
      return ram.subarray(gpa, gpa + length);
    },
  };
}

function boot(mode: '64' | '32', ram: Uint8Array | BootRam) {
  const spec = { cpus: 2, intx: INTX };
  if (ram instanceof Uint8Array) writeMpTable(ram.subarray(MPTABLE_START), MPTABLE_START, spec);
  else writeMpTable(ram.bytes(MPTABLE_START, mpTableSize(spec)), MPTABLE_START, spec);
  const initrd = new Uint8Array(3 * MIB + 123).map((_, i) => (i * 7) & 0xff);
  return loadLinux({
    ram,
    kernel: bzImage({ payload: 0x12345 }),
    initrd,
    cmdline: 'console=ttyS0 root=/dev/ram0',
    e820: pcE820({ ramSize: RAM }),
    mode,
  });
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('BootRam', () => {
  test.each(['64', '32'] as const)(
    'a %s-bit boot written through exact windows is the image written into one array',
    (mode) => {
      const whole = new Uint8Array(RAM);
      const direct = boot(mode, whole);
      const bytes = new Uint8Array(RAM);
      const ram = recording(bytes);
      const windowed = boot(mode, ram);
      expect(sha(whole)).toBe(BEFORE[mode]);
      expect(sha(bytes)).toBe(BEFORE[mode]);
      expect(windowed).toEqual(direct);
      // One window per piece, each exactly its size: nothing near the size of RAM.
      const pieces: [number, number][] = [
        [MPTABLE_START, mpTableSize({ cpus: 2, intx: INTX })],
        [windowed.kernel.addr, 0x12345],
        [windowed.initrd!.addr, windowed.initrd!.size],
        [windowed.cmdline.addr, windowed.cmdline.size],
        [windowed.zeroPage, 4096],
        [0x500, 40],
      ];
      if (mode === '64') pieces.push([0x9000, 0x6000]);
      expect(ram.windows).toEqual(pieces);
    },
  );

  test('writeBootCpuState takes a BootRam and asks it for the GDT and the page tables only', () => {
    const a = new Uint8Array(MIB);
    const b = new Uint8Array(MIB);
    const ram = recording(b);
    expect(writeBootCpuState(ram, '64', 0x1000200, 0x7000)).toEqual(
      writeBootCpuState(a, '64', 0x1000200, 0x7000),
    );
    expect(Buffer.compare(a, b)).toBe(0);
    expect(ram.windows).toEqual([
      [0x500, 40],
      [0x9000, 0x6000],
    ]);
  });

  test('bootRamOf refuses what is neither bytes nor a BootRam, and windows outside RAM', () => {
    expect(() => bootRamOf({} as BootRam, 'loadLinux')).toThrow(
      'loadLinux: ram must be a Uint8Array or a BootRam (length, bytes(gpa, length))',
    );
    expect(() => loadLinux({ ram: null as never, kernel: bzImage(), cmdline: '', e820: [] })).toThrow(
      TypeError,
    );
    const ram = bootRamOf(new Uint8Array(0x1000), 'test');
    expect(ram.bytes(0xff0, 0x10).length).toBe(0x10);
    expect(() => ram.bytes(0xff0, 0x11)).toThrow(
      'boot window [0xff0, +17) is outside guest RAM, which ends at 0x1000',
    );
    expect(() => checkBootWindow(-1, 4, 0x1000)).toThrow(RangeError);
    expect(() => checkBootWindow(0, 1.5, 0x1000)).toThrow(/must be non-negative integers/);
  });
});
