import type { AccessSize, FixedWidthMemory } from '../../lib/memory';
import type { VfioDeviceLike } from '../../lib/pci';
import type { RegionCap, RegionInfo } from '../../lib/vfio';

/** One access that reached the fake device, through the fd or through a mapping. */
export interface FakeAccess {
  via: 'fd' | 'mmap';
  region: number;
  /** Offset inside the region. */
  offset: number;
  size: AccessSize;
  isWrite: boolean;
  value: number | bigint;
}

/** A BAR of the fake device. */
export interface FakeBarSpec {
  size: number;
  type?: 'mem32' | 'mem64' | 'io';
  prefetchable?: boolean;
  /** Defaults to true for memory BARs. */
  mappable?: boolean;
  sparse?: { offset: number; size: number }[];
  msixMappable?: boolean;
}

/** Shape of the fake device. */
export interface FakeDeviceSpec {
  bdf?: string;
  vendorId: number;
  deviceId: number;
  /** Index = BAR number; a 64-bit BAR leaves the next slot empty. */
  bars: (FakeBarSpec | null | undefined)[];
  rom?: Uint8Array;
  msix?: { entries: number; tableBar: number; tableOffset: number; pbaBar: number; pbaOffset: number };
  /** Host page size; BAR backings are rounded up to it so sub-page BARs can be mapped whole. */
  pageSize?: number;
  /** How BAR memory is mapped; defaults to DataView-backed memory over the BAR's buffer. */
  mapper?: (
    bar: number,
    backing: Uint8Array,
    offset: number,
    length: number,
  ) => FixedWidthMemory & { close(): void };
}

const REGION_FLAG_READ = 1;
const REGION_FLAG_WRITE = 2;
const REGION_FLAG_MMAP = 4;

/**
 * DataViewMemory: a FixedWidthMemory over a DataView, logging every access so tests can check that
 * exactly one access of the guest's width reached the memory.
 */
export class DataViewMemory implements FixedWidthMemory {
  readonly length: number;
  closed = false;
  constructor(
    private readonly view: DataView,
    private readonly log: FakeAccess[] | null = null,
    private readonly region = -1,
    private readonly base = 0,
  ) {
    this.length = view.byteLength;
  }
  #check(o: number, size: AccessSize): void {
    if (this.closed) throw new Error('mapping is closed');
    if (!Number.isSafeInteger(o) || o < 0 || o + size > this.length) {
      throw new RangeError(`access of ${size} bytes at ${o} outside mapping of ${this.length} bytes`);
    }
  }
  #rec(o: number, size: AccessSize, isWrite: boolean, value: number | bigint): void {
    this.log?.push({ via: 'mmap', region: this.region, offset: this.base + o, size, isWrite, value });
  }
  read8(o: number): number {
    this.#check(o, 1);
    const v = this.view.getUint8(o);
    this.#rec(o, 1, false, v);
    return v;
  }
  read16(o: number): number {
    this.#check(o, 2);
    const v = this.view.getUint16(o, true);
    this.#rec(o, 2, false, v);
    return v;
  }
  read32(o: number): number {
    this.#check(o, 4);
    const v = this.view.getUint32(o, true);
    this.#rec(o, 4, false, v);
    return v;
  }
  read64(o: number): bigint {
    this.#check(o, 8);
    const v = this.view.getBigUint64(o, true);
    this.#rec(o, 8, false, v);
    return v;
  }
  write8(o: number, v: number): void {
    this.#check(o, 1);
    this.view.setUint8(o, v);
    this.#rec(o, 1, true, v);
  }
  write16(o: number, v: number): void {
    this.#check(o, 2);
    this.view.setUint16(o, v, true);
    this.#rec(o, 2, true, v);
  }
  write32(o: number, v: number): void {
    this.#check(o, 4);
    this.view.setUint32(o, v, true);
    this.#rec(o, 4, true, v);
  }
  write64(o: number, v: bigint): void {
    this.#check(o, 8);
    this.view.setBigUint64(o, v, true);
    this.#rec(o, 8, true, v);
  }
  close(): void {
    this.closed = true;
  }
}

function readLE(view: DataView, o: number, size: AccessSize): number | bigint {
  switch (size) {
    case 1:
      return view.getUint8(o);
    case 2:
      return view.getUint16(o, true);
    case 4:
      return view.getUint32(o, true);
    case 8:
      return view.getBigUint64(o, true);
  }
}

function writeLE(view: DataView, o: number, size: AccessSize, v: number | bigint): void {
  switch (size) {
    case 1:
      return view.setUint8(o, Number(v));
    case 2:
      return view.setUint16(o, Number(v), true);
    case 4:
      return view.setUint32(o, Number(v), true);
    case 8:
      return view.setBigUint64(o, BigInt(v), true);
  }
}

/**
 * FakeVfioDevice: a VFIO device without a kernel. Configuration space and BARs are JS buffers; the
 * config space has a power-management capability followed by MSI-X when asked for, so capability
 * walking is exercised.
 */
export class FakeVfioDevice implements VfioDeviceLike {
  readonly bdf: string;
  readonly config = new Uint8Array(256);
  readonly configView = new DataView(this.config.buffer);
  /** BAR backings, rounded up to the page size. */
  readonly backings: (Uint8Array | null)[] = [];
  readonly log: FakeAccess[] = [];
  readonly mappings: (FixedWidthMemory & { close(): void })[] = [];
  readonly spec: FakeDeviceSpec;
  /** Writable bits of config space. */
  readonly configWmask = new Uint8Array(256);

  constructor(spec: FakeDeviceSpec) {
    this.spec = spec;
    this.bdf = spec.bdf ?? '0000:00:03.0';
    const page = spec.pageSize ?? 4096;
    const v = this.configView;
    v.setUint16(0, spec.vendorId, true);
    v.setUint16(2, spec.deviceId, true);
    v.setUint16(4, 0x0000, true);
    for (let i = 0; i < 6; i++) {
      const b = spec.bars[i];
      if (!b) {
        this.backings.push(null);
        continue;
      }
      this.backings.push(new Uint8Array(Math.max(b.size, page)));
      const type = b.type ?? 'mem32';
      const bits = type === 'io' ? 1 : (type === 'mem64' ? 4 : 0) | (b.prefetchable ? 8 : 0);
      v.setUint32(0x10 + 4 * i, bits, true);
    }
    // Capability list: power management at 0x40 (ID 1), then MSI-X at 0x50 when present.
    v.setUint16(6, 0x10, true);
    this.config[0x34] = 0x40;
    this.config[0x40] = 0x01;
    this.config[0x41] = spec.msix ? 0x50 : 0;
    this.configWmask.fill(0xff, 0x04, 0x06);
    this.configWmask.fill(0xff, 0x0c, 0x0e);
    this.configWmask.fill(0xff, 0x10, 0x28);
    this.configWmask.fill(0xff, 0x30, 0x34);
    this.configWmask[0x3c] = 0xff;
    this.configWmask[0x44] = 0x03; // PMCSR power state
    if (spec.msix) {
      this.configWmask[0x53] = 0xc0;
      const m = spec.msix;
      this.config[0x50] = 0x11;
      this.config[0x51] = 0;
      v.setUint16(0x52, m.entries - 1, true);
      v.setUint32(0x54, m.tableOffset | m.tableBar, true);
      v.setUint32(0x58, m.pbaOffset | m.pbaBar, true);
    }
  }

  regionInfo(index: number): RegionInfo {
    if (index === 7) return this.#info(7, 256, REGION_FLAG_READ | REGION_FLAG_WRITE, []);
    if (index === 6)
      return this.#info(6, this.spec.rom?.length ?? 0, this.spec.rom ? REGION_FLAG_READ : 0, []);
    if (!Number.isInteger(index) || index < 0 || index > 8) throw new RangeError(`no region ${index}`);
    const b = index < 6 ? this.spec.bars[index] : null;
    if (!b) return this.#info(index, 0, 0, []);
    const mappable = b.mappable ?? b.type !== 'io';
    const caps: RegionCap[] = [];
    if (b.sparse) caps.push({ kind: 'sparse-mmap', areas: b.sparse });
    if (b.msixMappable) caps.push({ kind: 'msix-mappable' });
    return this.#info(
      index,
      b.size,
      REGION_FLAG_READ | REGION_FLAG_WRITE | (mappable ? REGION_FLAG_MMAP : 0),
      caps,
    );
  }

  #info(index: number, size: number, flags: number, caps: RegionCap[]): RegionInfo {
    return {
      index,
      flags,
      readable: (flags & REGION_FLAG_READ) !== 0,
      writable: (flags & REGION_FLAG_WRITE) !== 0,
      mappable: (flags & REGION_FLAG_MMAP) !== 0,
      size,
      offset: index * 2 ** 40,
      caps,
    };
  }

  #view(region: number, offset: number, size: number): DataView {
    if (region === 7) {
      if (offset + size > 256) throw new RangeError(`config access at ${offset} outside 256 bytes`);
      return this.configView;
    }
    if (region === 6) {
      const rom = this.spec.rom;
      if (!rom || offset + size > rom.length) throw new RangeError(`ROM access at ${offset} outside the ROM`);
      return new DataView(rom.buffer, rom.byteOffset, rom.byteLength);
    }
    const b = this.backings[region];
    const spec = this.spec.bars[region];
    if (!b || !spec || offset + size > spec.size)
      throw new RangeError(`BAR ${region} access at ${offset}+${size} outside the BAR`);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  read(region: number, offset: number, size: AccessSize): number | bigint {
    const v = readLE(this.#view(region, offset, size), offset, size);
    this.log.push({ via: 'fd', region, offset, size, isWrite: false, value: v });
    return v;
  }

  write(region: number, offset: number, size: AccessSize, v: number | bigint): void {
    const view = this.#view(region, offset, size);
    this.log.push({ via: 'fd', region, offset, size, isWrite: true, value: v });
    if (region === 6) return;
    if (region === 7) {
      // Like the kernel, keep read-only fields (IDs, capability structure, table size) read-only.
      for (let i = 0; i < size; i++) {
        const b = Math.floor(Number(BigInt(v) >> BigInt(8 * i)) % 256);
        const m = this.configWmask[offset + i];
        this.config[offset + i] = (this.config[offset + i] & ~m) | (b & m);
      }
      return;
    }
    writeLE(view, offset, size, v);
  }

  map(region: number, offset: number, length: number): FixedWidthMemory & { close(): void } {
    const b = region < 6 ? this.backings[region] : null;
    if (!b || offset + length > b.length)
      throw new RangeError(`cannot map ${length} bytes at ${offset} of region ${region}`);
    const m = this.spec.mapper
      ? this.spec.mapper(region, b, offset, length)
      : new DataViewMemory(new DataView(b.buffer, b.byteOffset + offset, length), this.log, region, offset);
    this.mappings.push(m);
    return m;
  }

  /** Accesses logged since the last call, then clears the log. */
  take(): FakeAccess[] {
    return this.log.splice(0);
  }
}
