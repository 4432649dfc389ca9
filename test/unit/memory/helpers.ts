import {
  AddressSpace,
  type AddressSpaceOptions,
  type FlatRange,
  MemoryRegion,
  type MemoryRegionOps,
  type UnassignedAccess,
} from '../../../lib';

/** Address spaces made by a test, closed after it so that later commits do not rebuild them. */
const open: AddressSpace[] = [];

export function space(root: MemoryRegion, name = 'test', opts: AddressSpaceOptions = {}): AddressSpace {
  const as = new AddressSpace(name, root, opts.guestErrors ? opts : { log: null, ...opts });
  open.push(as);
  return as;
}

export function closeAll(): void {
  while (open.length > 0) open.pop()!.close();
}

/**
 * A 64 KiB address space over an empty container, and the accesses it reports unassigned (its
 * deprecated 'unassigned' event): the fixture of the tests that map regions and access them.
 */
export function unassignedSpace(): { as: AddressSpace; root: MemoryRegion; events: UnassignedAccess[] } {
  const root = MemoryRegion.container('root', 0x10000);
  const as = space(root);
  const events: UnassignedAccess[] = [];
  as.on('unassigned', (e) => events.push(e));
  return { as, root, events };
}

/** The flat view as plain tuples, for readable expectations. */
export function flat(as: AddressSpace): Array<[number, number, string, number, boolean?]> {
  return as.flatView.ranges.map((r: FlatRange) =>
    r.readonly
      ? [r.addr, r.size, r.region.name, r.offsetInRegion, true]
      : [r.addr, r.size, r.region.name, r.offsetInRegion],
  );
}

/** An io region that records every callback and serves bytes from its own array. */
export function recordingIo(
  name: string,
  size: number,
  constraints: Pick<MemoryRegionOps, 'valid' | 'impl'> = {},
): { region: MemoryRegion; log: string[]; bytes: Uint8Array } {
  const log: string[] = [];
  const bytes = new Uint8Array(size + 8);
  const ops: MemoryRegionOps = {
    read(offset, sz) {
      log.push(`r${sz}@${offset}`);
      let v = 0n;
      for (let i = 0; i < sz; i++) v |= BigInt(bytes[offset + i]) << BigInt(8 * i);
      return sz === 8 ? v : Number(v);
    },
    write(offset, sz, value) {
      log.push(`w${sz}@${offset}=${value.toString(16)}`);
      const v = BigInt(value);
      for (let i = 0; i < sz; i++) bytes[offset + i] = Number((v >> BigInt(8 * i)) & 0xffn);
    },
    ...constraints,
  };
  return { region: MemoryRegion.io(name, size, ops), log, bytes };
}
