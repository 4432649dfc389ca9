/**
 * Looking at a device on any driver through sysfs, as lspci does: config space through the
 * `config` file, memory BARs through a mapping of `resourceN`, I/O BARs through pread on
 * `resourceN`. Each value is still one access of the width asked: the kernel reads an aligned 1, 2
 * or 4 bytes of `config` with one config access of that size, and an I/O `resourceN` with one
 * in/out of that size. What only VFIO tells (region flags, sparse mmap areas, IRQs, its reset) or
 * does (writes to a device a host driver owns) needs vfio-pci.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioError } from '../base/native-errors';
import { walkCapabilities } from '../pci/config';
import type { AccessSize } from '../types';
import { Mapping, PAGE_SIZE } from '../vfio/mapping';
import type { SysfsOptions } from '../vfio/sysfs';
import type { BackendJson } from './backend-info';
import type { InfoJson, RegionJson } from './info';
import { capabilityName, REGION_NAMES } from './names';
import {
  configSize,
  deviceDir,
  IORESOURCE_IO,
  readResources,
  resetMethods,
  type PciDeviceEntry,
} from './pci-sysfs';
import type { RegionPort } from './region-access';

const CONFIG = 7;
const ROM = 6;

/** What `info` leaves out when the device is not on vfio-pci. */
export const NEEDS_VFIO_PCI = [
  'VFIO region flags and sparse mmap areas',
  'IRQ indexes and counts',
  'VFIO_DEVICE_RESET',
  'writes',
];

/** True when VFIO can open the device (it is on a vfio driver). */
export function onVfio(dev: PciDeviceEntry): boolean {
  return dev.driver !== null && dev.driver.startsWith('vfio');
}

function openFile(file: string, bdf: string, writable: boolean): number {
  try {
    return fs.openSync(file, writable ? 'r+' : 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new VfioError({
      message: `cannot open ${file}: ${err.message}`,
      code: err.code ?? 'EIO',
      ...(typeof err.errno === 'number' ? { errno: Math.abs(err.errno) } : {}),
      op: 'open',
      path: file,
      bdf,
      hint:
        err.code === 'EACCES' || err.code === 'EPERM'
          ? 'the BARs through sysfs, and config space past 64 bytes, are root only'
          : 'see dmesg for what the kernel said',
    });
  }
}

function preadPort(fd: number, file: string, bdf: string): Omit<RegionPort, 'via' | typeof Symbol.dispose> {
  const readOne = (off: number, w: AccessSize): number | bigint => {
    const b = Buffer.alloc(w);
    const n = fs.readSync(fd, b, 0, w, off);
    if (n !== w) {
      throw new VfioError({
        message: `${file} gave ${n} of ${w} bytes at 0x${off.toString(16)}`,
        code: 'ESHORT',
        op: 'pread',
        path: file,
        bdf,
        hint: 'config space past the first 64 bytes is readable by root only: run as root',
      });
    }
    return w === 8 ? b.readBigUInt64LE() : b.readUIntLE(0, w);
  };
  return {
    read: readOne,
    write: () => {
      throw needsVfio(bdf, 'a write');
    },
    readMany: (off, count, w) => Array.from({ length: count }, (_, i) => readOne(off + i * w, w)),
  };
}

function needsVfio(bdf: string, what: string): VfioError {
  return new VfioError({
    message: `${what} to ${bdf} needs vfio-pci: its driver owns the device`,
    code: 'ENOTSUP',
    op: 'write',
    bdf,
    hint: `bind it first (vfio-bridge bind ${bdf}), then retry; restore gives it back`,
  });
}

/**
 * openSysfsPort: a port on `[offset, offset + length)` of `region` through sysfs.
 * @throws VfioError ENOTSUP for what sysfs cannot do at one access of `width`
 */
export function openSysfsPort(
  bdf: string,
  region: number,
  offset: number,
  length: number,
  width: AccessSize,
  opts: SysfsOptions,
): RegionPort {
  const dir = deviceDir(bdf, opts);
  const refuse = (what: string, hint: string): VfioError =>
    new VfioError({ message: `${what} of ${bdf} through sysfs`, code: 'ENOTSUP', op: 'read', bdf, hint });
  if (region === CONFIG) {
    if (width === 8) {
      throw refuse(
        'an 8-byte read of config space',
        'sysfs reads config space 1, 2 or 4 bytes at a time: use --width 4, or bind to vfio-pci',
      );
    }
    const file = path.join(dir, 'config');
    const fd = openFile(file, bdf, false);
    return { via: 'sysfs', ...preadPort(fd, file, bdf), [Symbol.dispose]: () => fs.closeSync(fd) };
  }
  if (region === ROM) {
    throw refuse(
      'the ROM',
      'read it with vfio-pci (bind first), or enable it with `echo 1 > rom` and read `rom`',
    );
  }
  const res = readResources(bdf, opts).find((r) => r.index === region)!;
  const file = path.join(dir, `resource${region}`);
  const fd = openFile(file, bdf, (res.flags & IORESOURCE_IO) === 0);
  if ((res.flags & IORESOURCE_IO) !== 0) {
    if (width === 8)
      throw refuse('an 8-byte I/O port access', 'I/O ports are 1, 2 or 4 bytes wide: use --width 4');
    return { via: 'sysfs', ...preadPort(fd, file, bdf), [Symbol.dispose]: () => fs.closeSync(fd) };
  }
  const start = Math.floor(offset / PAGE_SIZE) * PAGE_SIZE;
  const end = Math.ceil((offset + length) / PAGE_SIZE) * PAGE_SIZE;
  let m: Mapping;
  try {
    m = Mapping.fromFd(fd, start, end - start, { writable: false });
  } catch (e) {
    if (!(e instanceof VfioError) || e.code !== 'EINVAL') throw e;
    // With CONFIG_IO_STRICT_DEVMEM the kernel maps no BAR a driver has claimed.
    throw new VfioError({
      message: `the kernel refuses to map ${REGION_NAMES[region]} of ${bdf} through ${file}`,
      code: 'EINVAL',
      errno: 22,
      op: 'mmap',
      path: file,
      bdf,
      hint:
        'its driver has claimed the BAR, and this kernel maps no claimed BAR (CONFIG_IO_STRICT_DEVMEM): ' +
        `bind it to vfio-pci first (vfio-bridge bind ${bdf}), or boot with iomem=relaxed`,
    });
  } finally {
    fs.closeSync(fd); // the mapping keeps what it needs
  }
  return {
    via: 'sysfs',
    read: (off, w) => m.read(off - start, w),
    write: () => {
      throw needsVfio(bdf, 'a write');
    },
    readMany: (off, count, w) => Array.from(m.readBlock(off - start, count, w) as ArrayLike<number | bigint>),
    [Symbol.dispose]: () => m.close(),
  };
}

/** info for a device on any driver, from `config`, `resource` and `reset_method`. */
export function collectSysfsInfo(dev: PciDeviceEntry, opts: SysfsOptions, backend: BackendJson): InfoJson {
  const size = configSize(dev.bdf, opts);
  using port = openSysfsPort(dev.bdf, CONFIG, 0, size, 4, opts);
  let limit = size;
  const read = (off: number, w: 1 | 2 | 4): number => {
    if (off + w > limit) return 0;
    try {
      return port.read(off, w) as number;
    } catch (e) {
      // Without root only the first 64 bytes read: walk no further than that.
      if (e instanceof VfioError && e.code === 'ESHORT') limit = off;
      return 0;
    }
  };
  const regions: RegionJson[] = readResources(dev.bdf, opts).map((r) => ({
    index: r.index,
    name: REGION_NAMES[r.index] ?? `region${r.index}`,
    size: r.size,
    fdOffset: 0,
    readable: true,
    writable: false,
    mappable: (r.flags & IORESOURCE_IO) === 0 && r.index < ROM,
    sparseMmap: null,
    msixMappable: false,
    type: null,
  }));
  const caps = walkCapabilities(read, size).map((c) => ({
    offset: c.offset,
    id: c.id,
    name: capabilityName(c.id, c.extended),
    extended: c.extended,
  }));
  return {
    bdf: dev.bdf,
    source: 'sysfs',
    driver: dev.driver,
    needsVfioPci: NEEDS_VFIO_PCI,
    vendor: dev.vendor,
    device: dev.device,
    iommuGroup: dev.iommuGroup,
    backend,
    resettable: false,
    resetMethods: resetMethods(dev.bdf, opts),
    regions,
    capabilities: caps,
    irqs: [],
  };
}
