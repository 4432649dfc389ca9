import { closeSync, readSync, writeSync } from 'node:fs';
import type { AccessSize, FixedWidthMemory } from '../../../lib/memory';
import type { VfioDeviceLike } from '../../../lib/pci';
import { Mapping, memfd, type RegionInfo } from '../../../lib/vfio';
import { FakeVfioDevice, type FakeDeviceSpec } from '../../support/fake-device';

/**
 * MemfdVfioDevice: the fake device's config space and region layout, with every BAR on a memfd.
 * BAR accesses through the fd are real pread/pwrite calls of exactly the access size, and mappings
 * are real MAP_SHARED mmaps, so both paths see the same bytes as hardware would.
 */
export class MemfdVfioDevice implements VfioDeviceLike {
  readonly bdf: string;
  readonly fake: FakeVfioDevice;
  /** memfd per BAR (null for an empty slot). */
  readonly fds: (number | null)[];
  readonly mappings: Mapping[] = [];

  constructor(spec: FakeDeviceSpec) {
    this.fake = new FakeVfioDevice(spec);
    this.bdf = this.fake.bdf;
    const page = spec.pageSize ?? 4096;
    this.fds = spec.bars.slice(0, 6).map((b, i) => (b ? memfd(`bar${i}`, Math.max(b.size, page)) : null));
    while (this.fds.length < 6) this.fds.push(null);
  }

  regionInfo(index: number): RegionInfo {
    return this.fake.regionInfo(index);
  }

  #fd(region: number, offset: number, size: number): number | null {
    if (region > 5) return null;
    const fd = this.fds[region];
    const spec = this.fake.spec.bars[region];
    if (fd === null || !spec || offset + size > spec.size) {
      throw new RangeError(`BAR ${region} access at ${offset}+${size} outside the BAR`);
    }
    return fd;
  }

  read(region: number, offset: number, size: AccessSize): number | bigint {
    const fd = this.#fd(region, offset, size);
    if (fd === null) return this.fake.read(region, offset, size);
    const buf = Buffer.alloc(size);
    if (readSync(fd, buf, 0, size, offset) !== size) throw new Error(`short pread of BAR ${region}`);
    return size === 8 ? buf.readBigUInt64LE(0) : buf.readUIntLE(0, size);
  }

  write(region: number, offset: number, size: AccessSize, v: number | bigint): void {
    const fd = this.#fd(region, offset, size);
    if (fd === null) return this.fake.write(region, offset, size, v);
    const buf = Buffer.alloc(size);
    if (size === 8) buf.writeBigUInt64LE(BigInt(v));
    else buf.writeUIntLE(Number(v), 0, size);
    if (writeSync(fd, buf, 0, size, offset) !== size) throw new Error(`short pwrite of BAR ${region}`);
  }

  map(region: number, offset: number, length: number): FixedWidthMemory & { close(): void } {
    const fd = region < 6 ? this.fds[region] : null;
    if (fd === null || fd === undefined) throw new RangeError(`region ${region} cannot be mapped`);
    const m = Mapping.fromFd(fd, offset, length);
    this.mappings.push(m);
    return m;
  }

  /** Closes every memfd (mappings stay valid until closed themselves). */
  close(): void {
    for (const fd of this.fds) if (fd !== null) closeSync(fd);
    this.fds.fill(null);
  }
}
