// SIGBUS survival: vfio-pci zaps BAR mappings while memory decode is off, so an access faults.
// The fault must come back as a VfioError with the process alive, and access must work again
// once memory decode is restored, every time.
import { VfioError, type Mapping } from '../../lib';
import { CMD_MEMORY, CONFIG, describeDevice, openDevice, type Opened } from './hil';

function sigbus(fn: () => unknown): VfioError | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof VfioError && e.code === 'SIGBUS') return e;
    throw e;
  }
  return undefined;
}

describeDevice('edu', 'SIGBUS survival', (bdf) => {
  let o: Opened;
  let m: Mapping;
  let cmd: number;
  beforeAll(() => {
    o = openDevice(bdf());
    m = o.device.map(0, 0, 4096);
    cmd = o.device.read(CONFIG, 4, 2) as number;
  });
  afterAll(() => {
    o?.device.write(CONFIG, 4, 2, cmd | CMD_MEMORY);
    m?.close();
    o?.close();
  });
  const memory = (on: boolean) => o.device.write(CONFIG, 4, 2, on ? cmd | CMD_MEMORY : cmd & ~CMD_MEMORY);

  test('every accessor faults with a typed error while memory decode is off', () => {
    memory(false);
    try {
      const accesses: Array<[string, () => unknown]> = [
        ['read8', () => m.read8(0)],
        ['read16', () => m.read16(0)],
        ['read32', () => m.read32(0)],
        ['read64', () => m.read64(0x80)],
        ['read64Pair', () => m.read64Pair(0x80, new Uint32Array(2))],
        ['write8', () => m.write8(4, 1)],
        ['write16', () => m.write16(4, 1)],
        ['write32', () => m.write32(4, 1)],
        ['write64', () => m.write64(0x80, 1n)],
        ['write64Pair', () => m.write64Pair(0x80, 1, 2)],
        ['readBlock', () => m.readBlock(0, 4, 4)],
        ['writeBlock', () => m.writeBlock(0x80, new Uint32Array(2), 4)],
      ];
      for (const [name, access] of accesses) {
        const err = sigbus(access);
        expect({ name, code: err?.code }).toEqual({ name, code: 'SIGBUS' });
        expect(err?.op).toMatch(/^mapping\./);
      }
    } finally {
      memory(true);
    }
    expect(m.read32(0)).toBe(0x010000ed);
  });

  test('the fd path refuses BAR access with EIO while memory decode is off', () => {
    memory(false);
    let err: unknown;
    try {
      o.device.read(0, 0, 4);
    } catch (e) {
      err = e;
    } finally {
      memory(true);
    }
    expect(err).toBeInstanceOf(VfioError);
    expect((err as VfioError).code).toBe('EIO');
    expect(o.device.read(0, 0, 4)).toBe(0x010000ed);
  });

  test('1,000 rounds of fault and recovery leave the process and the mapping working', () => {
    let faults = 0;
    let good = 0;
    for (let i = 0; i < 1000; i++) {
      memory(false);
      if (sigbus(() => (i % 2 ? m.read32(0) : m.write32(4, i))) !== undefined) faults++;
      memory(true);
      if (m.read32(0) === 0x010000ed) good++;
    }
    expect({ faults, good }).toEqual({ faults: 1000, good: 1000 });
    m.write32(4, 0x55aa55aa);
    expect(m.read32(4)).toBe(0xaa55aa55);
  });
});

describeDevice('ivshmem', 'SIGBUS survival on a RAM BAR', (bdf) => {
  test('a zapped shared-memory mapping faults and recovers, keeping its contents', () => {
    const o: Opened = openDevice(bdf());
    const m = o.device.map(2, 0, 4096);
    const cmd = o.device.read(CONFIG, 4, 2) as number;
    try {
      m.write32(0x10, 0x600dcafe);
      o.device.write(CONFIG, 4, 2, cmd & ~CMD_MEMORY);
      expect(sigbus(() => m.read32(0x10))?.code).toBe('SIGBUS');
      expect(sigbus(() => m.write8(0x11, 0))?.code).toBe('SIGBUS');
      o.device.write(CONFIG, 4, 2, cmd | CMD_MEMORY);
      expect(m.read32(0x10)).toBe(0x600dcafe);
    } finally {
      o.device.write(CONFIG, 4, 2, cmd | CMD_MEMORY);
      m.close();
      o.close();
    }
  });
});

// The same guarantee on the NICs, so a real host with only those devices still proves it.
for (const role of ['rtl8139', 'e1000e'] as const) {
  describeDevice(role, 'SIGBUS survival on an MMIO BAR', (bdf) => {
    test('a zapped register mapping faults and recovers, 100 times', () => {
      const o: Opened = openDevice(bdf());
      const bar = [0, 1, 2, 3, 4, 5].find((i) => {
        const info = o.device.regionInfo(i);
        return info.mappable && info.size > 0;
      });
      if (bar === undefined) throw new Error(`${role} has no mappable BAR`);
      const m = o.device.map(bar, 0, Math.min(4096, o.device.regionInfo(bar).size));
      const cmd = o.device.read(CONFIG, 4, 2) as number;
      try {
        const before = m.read32(0);
        let faults = 0;
        for (let i = 0; i < 100; i++) {
          o.device.write(CONFIG, 4, 2, cmd & ~CMD_MEMORY);
          if (sigbus(() => m.read32(0)) !== undefined) faults++;
          o.device.write(CONFIG, 4, 2, cmd | CMD_MEMORY);
        }
        expect(faults).toBe(100);
        expect(m.read32(0)).toBe(before);
      } finally {
        o.device.write(CONFIG, 4, 2, cmd | CMD_MEMORY);
        m.close();
        o.close();
      }
    });
  });
}
