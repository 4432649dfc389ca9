// Guest RAM without a window of all of it: GuestRam's regions make their window on the first access
// through the memory model, the DMA listener maps them without one, fill() clears RAM in place, and
// a machine of 256 MiB with Linux loaded makes no big window, so V8 starts no full GC for it.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { AddressSpace, GuestRam, MemoryRegion, type VfioError } from '../../lib';
import { DmaListener } from '../../lib/dma/listener';
import { Machine, PciRootBus, type LinuxBootLayout } from '../../lib/vmm';
import { loadBootImages, type BootContext } from '../../lib/vmm/pc-boot';
import { FakeContainer } from '../unit/dma/fake-container';
import { bzImage } from '../unit/vmm/fake-bzimage';
import { native } from '../../lib/native';
import { DMA_HANDLE } from '../../lib/vfio/dma-types';
import { caught, ROOT } from './helpers';

const MiB = 2 ** 20;

/** The bytes at [offset, offset + length) of the RAM, read through its memfd (no window). */
function readFd(ram: GuestRam, offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  fs.readSync(ram.fd, b, 0, length, offset);
  return b;
}

describe('GuestRam.region', () => {
  it('makes its window on the first guest access, not when placed or mapped for DMA', () => {
    using ram = GuestRam.create(0x10000, { name: 'vfio-bridge-lazy' });
    const r = ram.region('pc.ram', 0x4000, 0x8000);
    const root = MemoryRegion.container('system', 2 ** 32);
    root.addSubregion(r, 0x100000);
    using as = new AddressSpace('memory', root, { log: null });
    const c = new FakeContainer();
    const l = new DmaListener(c, as, { log: null });
    expect(c.maps.map((m) => [m.iova, m.size, m.offset, m.memory])).toEqual([
      [0x100000, 0x8000, 0x4000, ram],
    ]);
    expect(ram.windowStats).toEqual({ count: 0, bytes: 0, largest: 0 });
    expect(r.allocatedBacking).toBeNull();

    as.write(0x100010, 4, 0xdeadbeef);
    expect(ram.windowStats).toEqual({ count: 1, bytes: 0x8000, largest: 0x8000 });
    expect(r.allocatedBacking).toBe(ram.buffer(0x4000, 0x8000)); // the cached window, made once
    expect(readFd(ram, 0x4010, 4).readUInt32LE(0)).toBe(0xdeadbeef);
    l.close();
    root.removeSubregion(r);
  });

  it('checks its window when made, as buffer() does', () => {
    using ram = GuestRam.create(0x2000);
    expect(() => ram.region('x', 0x1000, 0x2000)).toThrow(
      'guestRam.region: offset 4096 length 8192 is outside the 8192-byte RAM',
    );
    expect(() => ram.region('x', 'a' as never)).toThrow(TypeError);
    expect(ram.windowStats.count).toBe(0);
  });

  it('keeps the RAM from closing while shown, even never touched; after close it shows nothing', () => {
    const ram = GuestRam.create(0x4000, { name: 'vfio-bridge-lazy-busy' });
    const root = MemoryRegion.container('system', 2 ** 32);
    const never = ram.region('never', 0, 0x2000);
    root.addSubregion(never, 0x10000);
    const as = new AddressSpace('memory', root, { log: null });
    const e = caught(() => ram.close()) as VfioError;
    expect(e.code).toBe('EBUSY');
    expect(e.message).toContain("'never' in address space 'memory'");
    expect(ram.closed).toBe(false);
    expect(never.allocatedBacking).toBeNull(); // asking made nothing

    root.removeSubregion(never);
    const spare = ram.region('spare', 0x2000, 0x2000); // never placed before close
    ram.close();
    expect(never.backingLost).toBe(true);
    expect((caught(() => never.backing) as VfioError).code).toBe('ECLOSED');
    // Placed after close, both are unassigned space: reported, never a TypeError at the VMM.
    const seen: string[] = [];
    as.on('unassigned', (u) => seen.push(`${u.reason}@${u.addr.toString(16)}`));
    root.addSubregion(never, 0x10000);
    root.addSubregion(spare, 0x20000);
    expect(as.flatView.ranges).toEqual([]);
    expect(as.read(0x10000, 4)).toBe(0xffffffff);
    as.write(0x20000, 4, 1);
    expect(seen).toEqual(['unassigned@10000', 'unassigned@20000']);
    as.close();
  });
});

describe('GuestRam.fill', () => {
  it('sets a range in place without a window', () => {
    using ram = GuestRam.create(0x10000);
    ram.fill(0x1000, 0x2001, 0xab);
    expect([...readFd(ram, 0xfff, 3)]).toEqual([0, 0xab, 0xab]);
    expect([...readFd(ram, 0x2fff, 3)]).toEqual([0xab, 0xab, 0]);
    ram.fill(0x1800, 0x10); // zero by default
    expect([...readFd(ram, 0x17ff, 0x12)]).toEqual([0xab, ...new Array(0x10).fill(0), 0xab]);
    ram.fill(0x10000, 0); // an empty range at the end is nothing to do
    expect(ram.windowStats.count).toBe(0);
  });

  it('refuses ranges outside the RAM, bad bytes and closed RAM with typed errors', () => {
    const ram = GuestRam.create(0x2000);
    expect(() => ram.fill(0x1000, 0x1001)).toThrow(
      'guestRam.fill: offset 4096 length 4097 is outside the 8192-byte RAM',
    );
    expect(() => ram.fill(0x2001, 0)).toThrow(RangeError);
    expect(() => ram.fill(-1, 1)).toThrow(RangeError);
    expect(() => ram.fill(0, 2 ** 53)).toThrow(RangeError);
    expect(() => ram.fill(0, 1, 256)).toThrow('guestRam.fill: byte 256 is not an integer in [0, 255]');
    expect(() => ram.fill(0, 1, 1.5)).toThrow(RangeError);
    expect(() => ram.fill(0, 1, '1' as never)).toThrow('guestRam.fill: byte must be a number, got string');
    expect(() => ram.fill('0' as never, 1)).toThrow(TypeError);
    ram.close();
    expect((caught(() => ram.fill(0, 1)) as VfioError).code).toBe('ECLOSED');
  });
});

describe('native guestMemoryFill', () => {
  it('checks its range without overflow, and its byte, itself', () => {
    const ram = GuestRam.create(0x2000);
    const h = ram[DMA_HANDLE]();
    expect(() => native.guestMemoryFill(h, 0x1000, 0x1001, 0)).toThrow(
      'guestMemory.fill: offset 4096 length 4097 is outside the memory (length 8192)',
    );
    expect(() => native.guestMemoryFill(h, 2 ** 53 - 1, 2, 0)).toThrow(RangeError);
    expect(() => native.guestMemoryFill(h, 0x2001, 0, 0)).toThrow(RangeError);
    expect(() => native.guestMemoryFill(h, 0, 1, 256)).toThrow(
      'guestMemory.fill: byte 256 is not in [0, 255]',
    );
    expect(() => native.guestMemoryFill({} as never, 0, 1, 0)).toThrow(TypeError);
    native.guestMemoryFill(h, 0x1fff, 1, 0x5a);
    expect([...readFd(ram, 0x1ffe, 2)]).toEqual([0, 0x5a]);
    ram.close();
    expect((caught(() => native.guestMemoryFill(h, 0, 1, 0)) as VfioError).code).toBe('ECLOSED');
  });
});

/** The boot images a PcMachine writes: the MP table, a kernel, an initramfs and the command line. */
function loadImages(machine: Machine): LinuxBootLayout {
  return loadBootImages({
    machine,
    host: new PciRootBus(),
    cpus: 2,
    kernel: bzImage({ payload: 8 * MiB }),
    initrd: new Uint8Array(4 * MiB).fill(7),
    cmdline: 'console=ttyS0',
  } as unknown as BootContext);
}

describe('a 256 MiB machine with Linux loaded', () => {
  it('makes no window larger than its biggest boot image', () => {
    using machine = Machine.create({ ramSize: 256 * MiB });
    const layout = loadImages(machine);
    const w = machine.ram.windowStats;
    expect(w.largest).toBe(8 * MiB); // the kernel
    expect(w.bytes).toBeLessThan(16 * MiB);
    for (const r of machine.ramRanges) expect(r.region.allocatedBacking).toBeNull();
    // What it wrote is in guest RAM.
    expect(readFd(machine.ram, layout.initrd!.addr, 4 * MiB).equals(Buffer.alloc(4 * MiB, 7))).toBe(true);
    expect(readFd(machine.ram, layout.cmdline.addr, 14).toString('latin1')).toBe('console=ttyS0\0');
  });

  it('starts no full garbage collection, where one window of all RAM does', () => {
    // Run in a child under --trace-gc: the lines between the markers are the GCs the step caused.
    const script = (whole: boolean): string => `
      const { Machine, PciRootBus } = require(${JSON.stringify(path.join(ROOT, 'lib/vmm'))});
      const { loadBootImages } = require(${JSON.stringify(path.join(ROOT, 'lib/vmm/pc-boot'))});
      const { bzImage } = require(${JSON.stringify(path.join(ROOT, 'test/unit/vmm/fake-bzimage'))});
      const kernel = bzImage({ payload: 8 << 20 });
      const initrd = new Uint8Array(4 << 20).fill(7);
      const host = new PciRootBus();
      global.gc();
      console.log('--- begin');
      const m = Machine.create({ ramSize: 256 << 20 });
      ${whole ? 'm.ram.buffer(0, 256 << 20);' : ''}
      loadBootImages({ machine: m, host, cpus: 2, kernel, initrd, cmdline: 'console=ttyS0' });
      setTimeout(() => { console.log('--- end'); m.close(); }, 300);
    `;
    const fullGcs = (whole: boolean): string[] => {
      const r = spawnSync(
        process.execPath,
        ['--expose-gc', '--trace-gc', '-r', '@swc-node/register', '-e', script(whole)],
        { cwd: ROOT, encoding: 'utf8' },
      );
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const lines = r.stdout.split('\n');
      const from = lines.indexOf('--- begin');
      const to = lines.indexOf('--- end');
      expect(from).toBeGreaterThanOrEqual(0);
      expect(to).toBeGreaterThan(from);
      return lines.slice(from, to).filter((l) => /Mark-Compact|Mark-sweep/i.test(l));
    };
    expect(fullGcs(false)).toEqual([]);
    // The control: the same run with one window of all RAM, which is what V8 answers with a full GC.
    expect(fullGcs(true).length).toBeGreaterThan(0);
  }, 60_000);
});
