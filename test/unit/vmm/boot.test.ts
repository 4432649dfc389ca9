import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  BOOT_CS,
  BOOT_DS,
  BOOT_GDT_ADDR,
  BOOT_PML4_ADDR,
  CMDLINE_ADDR,
  checkE820,
  E820_RAM,
  E820_RESERVED,
  gdtEntry,
  loadLinux,
  MPTABLE_START,
  parseBzImage,
  pcE820,
  pcRamRanges,
  segmentOf,
  VmmError,
  writeBootCpuState,
  writeE820,
  ZERO_PAGE_ADDR,
} from '../../../lib/vmm';
import { bzImage } from './fake-bzimage';
import { loadLinuxSteps } from '../../../lib/vmm/boot/load-linux';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

const code = (e: unknown) => (e instanceof VmmError ? e.code : String(e));
const thrown = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
};

describe('e820', () => {
  it('maps a small PC: base memory, MP table and BIOS reserved, RAM from 1 MiB', () => {
    expect(pcE820({ ramSize: 256 * MIB })).toEqual([
      { addr: 0, size: MPTABLE_START, type: E820_RAM },
      { addr: MPTABLE_START, size: 0x400, type: E820_RESERVED },
      { addr: 0xf0000, size: 0x10000, type: E820_RESERVED },
      { addr: MIB, size: 255 * MIB, type: E820_RAM },
    ]);
  });

  it('puts RAM beyond the PCI hole above 4 GiB', () => {
    const map = pcE820({ ramSize: 6 * GIB, pciHoleStart: 3 * GIB });
    expect(map.at(-2)).toEqual({ addr: MIB, size: 3 * GIB - MIB, type: E820_RAM });
    expect(map.at(-1)).toEqual({ addr: 4 * GIB, size: 3 * GIB, type: E820_RAM });
    expect(pcRamRanges({ ramSize: 6 * GIB, pciHoleStart: 3 * GIB })).toEqual([
      { addr: 0, size: 3 * GIB },
      { addr: 4 * GIB, size: 3 * GIB },
    ]);
  });

  it('writes the 20-byte boot_params format and refuses malformed maps', () => {
    const out = new Uint8Array(80);
    expect(writeE820(out, pcE820({ ramSize: 64 * MIB }))).toBe(4);
    const v = new DataView(out.buffer);
    expect(v.getBigUint64(60, true)).toBe(BigInt(MIB));
    expect(v.getBigUint64(68, true)).toBe(BigInt(63 * MIB));
    expect(v.getUint32(76, true)).toBe(E820_RAM);
    expect(
      code(
        thrown(() =>
          checkE820([
            { addr: 0, size: 10, type: 1 },
            { addr: 5, size: 10, type: 2 },
          ]),
        ),
      ),
    ).toBe('EE820');
    expect(code(thrown(() => checkE820([{ addr: 0, size: 0, type: 1 }])))).toBe('EE820');
    expect(code(thrown(() => checkE820([{ addr: 0, size: 1, type: 9 as 1 }])))).toBe('EE820');
    expect(code(thrown(() => pcE820({ ramSize: MIB })))).toBe('EE820');
    expect(() => writeE820(new Uint8Array(10), pcE820({ ramSize: 64 * MIB }))).toThrow(RangeError);
  });
});

describe('parseBzImage', () => {
  it('reads the setup header fields a loader needs', () => {
    const h = parseBzImage(bzImage({ setupSects: 30 }));
    expect(h).toMatchObject({
      version: 0x020f,
      setupSects: 30,
      xloadflags: 0x7f,
      prefAddress: 0x1000000,
      initSize: 0x800000,
      cmdlineSize: 2047,
      kernelOffset: 31 * 512,
      kernelSize: 0x3000,
      headerLength: 0x26c - 0x1f1,
      relocatable: true,
    });
  });

  it('refuses what is not a bzImage or is too old', () => {
    expect(code(thrown(() => parseBzImage(new Uint8Array(100))))).toBe('ENOTBZIMAGE');
    const elf = bzImage();
    elf.set([0x7f, 0x45, 0x4c, 0x46], 0x202);
    expect(code(thrown(() => parseBzImage(elf)))).toBe('ENOTBZIMAGE');
    expect(code(thrown(() => parseBzImage(bzImage({ version: 0x0204 }))))).toBe('EPROTOCOL');
    expect(code(thrown(() => parseBzImage(bzImage({ loadflags: 0 }))))).toBe('EPROTOCOL');
    expect(code(thrown(() => parseBzImage(bzImage({ payload: 0 }))))).toBe('ENOTBZIMAGE');
  });
});

describe('loadLinux', () => {
  const ramSize = 64 * MIB;
  const boot = (opts: Partial<Parameters<typeof loadLinux>[0]> = {}) => {
    const ram = new Uint8Array(ramSize);
    const kernel = opts.kernel ?? bzImage();
    const layout = loadLinux({
      ram,
      kernel,
      cmdline: 'console=ttyS0 panic=-1',
      e820: pcE820({ ramSize }),
      ...opts,
    });
    return { ram, kernel, layout, v: new DataView(ram.buffer) };
  };

  it('copies the protected-mode kernel to its preferred address and fills boot_params', () => {
    const initrd = new Uint8Array(0x12345).fill(0x5a);
    const { ram, kernel, layout, v } = boot({ initrd });
    expect(layout.kernel).toEqual({ addr: 0x1000000, size: 0x3000, initSize: 0x800000 });
    expect(
      Buffer.from(ram.subarray(0x1000000, 0x1003000)).equals(Buffer.from(kernel.subarray(5 * 512))),
    ).toBe(true);
    // The initramfs: page-aligned, ending as close to the top of RAM as it can.
    expect(layout.initrd?.addr).toBe(Math.floor((ramSize - 0x12345) / 4096) * 4096);
    expect(ram[layout.initrd!.addr]).toBe(0x5a);
    expect(ram[layout.initrd!.addr + 0x12344]).toBe(0x5a);
    // boot_params: the header copied, the loader's fields set.
    const zp = ZERO_PAGE_ADDR;
    expect(v.getUint32(zp + 0x202, true)).toBe(0x53726448);
    expect(v.getUint16(zp + 0x206, true)).toBe(0x020f);
    expect(ram[zp + 0x210]).toBe(0xff);
    expect(ram[zp + 0x211] & 0x81).toBe(0x81);
    expect(v.getUint16(zp + 0x1fa, true)).toBe(0xffff);
    expect(v.getUint32(zp + 0x228, true)).toBe(CMDLINE_ADDR);
    expect(v.getUint32(zp + 0x218, true)).toBe(layout.initrd?.addr);
    expect(v.getUint32(zp + 0x21c, true)).toBe(0x12345);
    expect(v.getUint32(zp + 0x0c0, true)).toBe(0);
    expect(ram[zp + 0x1e8]).toBe(4);
    expect(v.getBigUint64(zp + 0x2d0 + 3 * 20, true)).toBe(BigInt(MIB));
    expect(ram[zp + 0x1ef]).toBe(0); // sentinel
    expect(Buffer.from(ram.subarray(CMDLINE_ADDR, CMDLINE_ADDR + 23)).toString()).toBe(
      'console=ttyS0 panic=-1\0',
    );
    expect(layout.cmdline).toEqual({ addr: CMDLINE_ADDR, size: 23 });
  });

  it('in steps: the kernel, then the initramfs, then the rest; the same RAM and layout as at once', () => {
    const initrd = new Uint8Array(0x12345).fill(0x5a);
    const { ram: atOnce, layout } = boot({ initrd });
    const ram = new Uint8Array(ramSize);
    const steps = loadLinuxSteps({
      ram,
      kernel: bzImage(),
      cmdline: 'console=ttyS0 panic=-1',
      e820: pcE820({ ramSize }),
      initrd,
    });
    const seen: string[] = [];
    let step = steps.next();
    while (!step.done) {
      seen.push(step.value);
      step = steps.next();
    }
    expect(seen).toEqual(['kernel', 'initrd']);
    expect(step.value).toEqual(layout);
    expect(Buffer.compare(ram, atOnce)).toBe(0);
  });

  it('starts the 64-bit entry in long mode at load address + 0x200 with RSI = boot_params', () => {
    const { layout, v } = boot();
    const { regs, sregs } = layout.cpu;
    expect(regs).toMatchObject({ rip: 0x1000200, rsi: ZERO_PAGE_ADDR, rflags: 2, rbp: 0 });
    expect(sregs.cs).toMatchObject({
      selector: BOOT_CS,
      l: 1,
      db: 0,
      s: 1,
      type: 0xb,
      present: 1,
      base: 0,
      limit: 0xffffffff,
      g: 1,
    });
    for (const s of [sregs.ds, sregs.es, sregs.ss])
      expect(s).toMatchObject({ selector: BOOT_DS, type: 3, db: 1, limit: 0xffffffff });
    expect(sregs.tr).toMatchObject({ type: 0xb, present: 1, s: 0 });
    expect((sregs.cr0 & 0x80000001) >>> 0).toBe(0x80000001);
    expect(sregs.cr4 & 0x20).toBe(0x20);
    expect(sregs.efer).toBe(0x500);
    expect(sregs.cr3).toBe(BOOT_PML4_ADDR);
    expect(sregs.gdt).toEqual({ base: BOOT_GDT_ADDR, limit: 39 });
    // The GDT in RAM is what the segment registers say.
    expect(segmentOf(v.getBigUint64(BOOT_GDT_ADDR + BOOT_CS, true), BOOT_CS)).toEqual(sregs.cs);
    expect(segmentOf(v.getBigUint64(BOOT_GDT_ADDR + BOOT_DS, true), BOOT_DS)).toEqual(sregs.ds);
    // Walk the page tables for a few addresses: each must map to itself.
    const walk = (va: number) => {
      const pml4e = v.getBigUint64(Number(sregs.cr3) + 8 * Math.floor(va / 2 ** 39), true);
      const pdpt = Number(pml4e & ~0xfffn);
      const pdpte = v.getBigUint64(pdpt + 8 * (Math.floor(va / 2 ** 30) % 512), true);
      const pd = Number(pdpte & ~0xfffn);
      const pde = v.getBigUint64(pd + 8 * (Math.floor(va / 2 ** 21) % 512), true);
      expect(pde & 0x81n).toBe(0x81n); // present, 2 MiB page
      return Number(pde & ~0x1fffffn) + (va % 2 ** 21);
    };
    for (const va of [0, ZERO_PAGE_ADDR, 0x1000200, 0x3fffffff, 0xfec00000, 0xffffffff])
      expect(walk(va)).toBe(va);
  });

  it('starts the 32-bit entry in flat protected mode at code32_start', () => {
    const { layout } = boot({ mode: '32' });
    expect(layout.cpu.regs.rip).toBe(0x1000000);
    expect(layout.cpu.sregs).toMatchObject({ cr0: 0x11, cr3: 0, cr4: 0, efer: 0 });
    expect(layout.cpu.sregs.cs).toMatchObject({ l: 0, db: 1, selector: BOOT_CS });
  });

  it('refuses inputs that cannot boot, each with its code and before writing anything', () => {
    expect(code(thrown(() => boot({ cmdline: 'x'.repeat(2048) })))).toBe('ECMDLINE');
    expect(code(thrown(() => boot({ cmdline: 'a\0b' })))).toBe('ECMDLINE');
    expect(code(thrown(() => boot({ kernel: bzImage({ xloadflags: 0 }) })))).toBe('EPROTOCOL');
    expect(code(thrown(() => boot({ kernel: bzImage({ initSize: 60 * MIB }) })))).toBe('ENOSPACE');
    expect(code(thrown(() => boot({ initrd: new Uint8Array(40 * MIB + 1) })))).toBe('ENOSPACE');
    expect(
      code(
        thrown(() => boot({ kernel: bzImage({ initrdAddrMax: 0x1400000 }), initrd: new Uint8Array(MIB) })),
      ),
    ).toBe('ENOSPACE');
    const ram = new Uint8Array(ramSize);
    const err = thrown(() =>
      loadLinux({ ram, kernel: bzImage(), cmdline: '', e820: [{ addr: 0, size: MIB, type: 1 }] }),
    );
    expect(code(err)).toBe('ENOSPACE');
    expect(ram.every((b) => b === 0)).toBe(true);
    expect(() => boot({ mode: '16' as '32' })).toThrow(TypeError);
  });

  it('gdtEntry and segmentOf agree with the kernel GDT_ENTRY encoding', () => {
    expect(gdtEntry(0xa09b, 0, 0xfffff)).toBe(0x00af9b000000ffffn);
    expect(gdtEntry(0xc093, 0, 0xfffff)).toBe(0x00cf93000000ffffn);
    expect(segmentOf(gdtEntry(0x4093, 0x12345678, 0xabcde), 8)).toMatchObject({
      base: 0x12345678,
      limit: 0xabcde,
      g: 0,
      db: 1,
    });
    expect(() => writeBootCpuState(new Uint8Array(0x1000), '64', 0, 0)).toThrow(VmmError);
  });
});

// The lab's Debian kernel, when this machine has provisioned the lab (lib/cli/lab/provision.ts).
const labCache =
  process.env.VFIO_BRIDGE_LAB_CACHE ??
  join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'vfio-bridge/lab');
const labKernel = (() => {
  if (!existsSync(labCache)) return null;
  for (const d of readdirSync(labCache).filter((n) => n.startsWith('linux-image-6.12.'))) {
    const boot = join(labCache, d, 'boot');
    const f = existsSync(boot) ? readdirSync(boot).find((n) => n.startsWith('vmlinuz-')) : undefined;
    if (f) return join(boot, f);
  }
  return null;
})();
(labKernel ? describe : describe.skip)(
  labKernel
    ? 'the lab kernel'
    : 'the lab kernel (skipped: the lab is not provisioned here, run scripts/lab/lab.sh --provision)',
  () => {
    it('is a relocatable bzImage with the 64-bit entry point, loadable into 256 MiB', () => {
      const kernel = new Uint8Array(readFileSync(labKernel as string));
      const h = parseBzImage(kernel);
      expect(h.version).toBeGreaterThanOrEqual(0x020f);
      expect(h.xloadflags & 1).toBe(1);
      expect(h.relocatable).toBe(true);
      expect(h.prefAddress).toBe(0x1000000);
      const ram = new Uint8Array(256 * MIB);
      const layout = loadLinux({
        ram,
        kernel,
        cmdline: 'console=ttyS0',
        initrd: new Uint8Array(8 * MIB),
        e820: pcE820({ ramSize: 256 * MIB }),
      });
      expect(layout.initrd!.addr).toBeGreaterThanOrEqual(layout.kernel.addr + layout.kernel.initSize);
    });
  },
);
