import { type AccessSize, MemoryRegion } from '../memory';
import type { VfioPciDevice } from './device';

/** The ports of PCI configuration mechanism #1: CONFIG_ADDRESS at 0xcf8, CONFIG_DATA at 0xcfc. */
export const PCI_CONFIG_IO_PORT = 0xcf8;

/**
 * pciConfigIo: an I/O region for ports 0xcf8-0xcff serving a guest's configuration cycles
 * (mechanism #1) to the devices in `devices`, keyed by their guest-visible device number on bus 0
 * (function 0). Place it in a bus's I/O space at {@link PCI_CONFIG_IO_PORT}.
 *
 * A cycle to a device number that is not there, or with the enable bit clear, reads all-ones and
 * is dropped, as on a real host bridge. `onWrite` hears every configuration write after the device
 * took it (a VMM follows MSI programming there until the device reports it itself).
 */
export function pciConfigIo(
  devices: ReadonlyMap<number, VfioPciDevice>,
  onWrite?: (dev: VfioPciDevice, offset: number, size: 1 | 2 | 4, value: number) => void,
): MemoryRegion {
  let address = 0;
  const target = (o: number): { dev: VfioPciDevice; reg: number } | null => {
    if ((address & 0x8000_0000) === 0) return null;
    const bus = (address >>> 16) & 0xff;
    const slot = (address >>> 11) & 0x1f;
    const fn = (address >>> 8) & 7;
    const dev = bus === 0 && fn === 0 ? devices.get(slot) : undefined;
    return dev ? { dev, reg: (address & 0xfc) + (o - 4) } : null;
  };
  const ones = (size: AccessSize): number | bigint =>
    size === 8 ? 0xffff_ffff_ffff_ffffn : 2 ** (size * 8) - 1;
  return MemoryRegion.io('pci-conf', 8, {
    read(o, size) {
      if (o < 4) return size === 4 && o === 0 ? address >>> 0 : ones(size);
      const t = target(o);
      return t ? t.dev.configRead(t.reg, size as 1 | 2 | 4) : ones(size);
    },
    write(o, size, value) {
      if (o < 4) {
        if (size === 4 && o === 0) address = Number(value) >>> 0;
        return;
      }
      const t = target(o);
      if (!t) return;
      t.dev.configWrite(t.reg, size as 1 | 2 | 4, Number(value));
      onWrite?.(t.dev, t.reg, size as 1 | 2 | 4, Number(value));
    },
    valid: { minAccessSize: 1, maxAccessSize: 4 },
    impl: { minAccessSize: 1, maxAccessSize: 4 },
  });
}
