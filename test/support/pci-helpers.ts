import {
  type MapInfoRange,
  SystemAddressSpaces,
  VfioPciDevice,
  type VfioPciDeviceOptions,
} from '../../lib/pci';
import { FakeVfioDevice, type FakeDeviceSpec } from './fake-device';

/** An e1000e-like device: two 128 KiB memory BARs, an I/O BAR, and MSI-X at the start of BAR 3. */
export function e1000eSpec(extra: Partial<FakeDeviceSpec> = {}): FakeDeviceSpec {
  return {
    bdf: '0000:00:05.0',
    vendorId: 0x8086,
    deviceId: 0x10d3,
    bars: [
      { size: 0x20000 },
      { size: 0x20000 },
      { size: 0x20, type: 'io' },
      { size: 0x4000, msixMappable: true },
    ],
    msix: { entries: 5, tableBar: 3, tableOffset: 0, pbaBar: 3, pbaOffset: 0x2000 },
    ...extra,
  };
}

/** An rtl8139-like device: a 256-byte I/O BAR 0 and a 256-byte memory BAR 1. */
export function rtl8139Spec(): FakeDeviceSpec {
  return {
    bdf: '0000:00:04.0',
    vendorId: 0x10ec,
    deviceId: 0x8139,
    bars: [{ size: 0x100, type: 'io' }, { size: 0x100 }],
  };
}

/** An ivshmem-plain-like device: 256-byte registers in BAR 0 and 1 MiB of shared memory in 64-bit BAR 2. */
export function ivshmemSpec(): FakeDeviceSpec {
  return {
    bdf: '0000:00:06.0',
    vendorId: 0x1af4,
    deviceId: 0x1110,
    bars: [{ size: 0x100 }, null, { size: 0x100000, type: 'mem64', prefetchable: true }],
  };
}

/** Programs BAR `bar` with `addr` (both halves for a 64-bit BAR) through config space. */
export function placeBar(dev: VfioPciDevice, bar: number, addr: number): void {
  const b = dev.bars[bar];
  const lo = addr % 2 ** 32;
  dev.configWrite(0x10 + 4 * bar, 4, b?.type === 'io' ? lo | 1 : lo);
  if (b?.type === 'mem64') dev.configWrite(0x14 + 4 * bar, 4, Math.floor(addr / 2 ** 32));
}

/** Places each BAR of `bars` (BAR index to address), then turns memory and I/O decode on. */
export function placeBars(dev: VfioPciDevice, bars: Readonly<Record<number, number>>): void {
  for (const [bar, addr] of Object.entries(bars)) placeBar(dev, Number(bar), addr);
  enableDecode(dev);
}

/** Enables memory and I/O decode. */
export function enableDecode(dev: VfioPciDevice): void {
  dev.configWrite(0x04, 2, 0x0007);
}

/** The mapinfo ranges of `dev` BAR `bar`, reduced to what the tests compare. */
export function barRanges(dev: VfioPciDevice, bar: number): [number, number, string, string][] {
  return dev
    .mapinfo()
    .filter((r: MapInfoRange) => r.bar === bar)
    .map((r) => [r.barOffset, r.size, r.name, r.mapinfo]);
}

/** A fake device of `spec` (e1000e by default) opened on a bus of its own. */
export function openFake(spec = e1000eSpec(), opts: VfioPciDeviceOptions = {}) {
  const bus = new SystemAddressSpaces();
  const fake = new FakeVfioDevice(spec);
  const dev = VfioPciDevice.open(bus, fake, opts);
  return { bus, fake, dev };
}

/** Counts the turns of the event loop from now until stopped. */
export function ticker(): { readonly turns: number; stop(): void } {
  let turns = 0;
  let running = true;
  const tick = (): void => {
    turns++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    get turns() {
      return turns;
    },
    stop: () => void (running = false),
  };
}

/** A fresh fake device opened on `bus`. */
export function fake(spec: FakeDeviceSpec): FakeVfioDevice {
  return new FakeVfioDevice(spec);
}

export type { SystemAddressSpaces };
