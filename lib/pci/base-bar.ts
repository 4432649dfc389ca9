/**
 * The `"<BDF> base BAR n"` region: the whole window the guest gave a BAR. As in QEMU 7.2 it is an I/O
 * region without handlers rather than a pure container, so it owns every byte of the window: where
 * nothing inside covers it (the half a BAR gained from MSI-X relocation, or a BAR that exists only to
 * hold the relocated table), the flat view shows the base BAR itself at priority 1, and a guest access
 * there never reaches whatever lies beneath the window. QEMU serves such an access with its unassigned
 * ops: a read returns 0 and a write is dropped.
 */
import { type AccessSize, MemoryRegion } from '../memory';

const ANY = { minAccessSize: 1 as AccessSize, maxAccessSize: 8 as AccessSize, unaligned: true };

/**
 * baseBarRegion: the base region of a BAR window of `size` bytes. `touched` hears every guest access
 * that reached it, i.e. one that nothing inside the BAR serves.
 */
export function baseBarRegion(
  name: string,
  size: number,
  touched: (offset: number, size: AccessSize, isWrite: boolean) => void,
): MemoryRegion {
  return MemoryRegion.io(name, size, {
    read(offset, n) {
      touched(offset, n, false);
      return n === 8 ? 0n : 0;
    },
    write(offset, n) {
      touched(offset, n, true);
    },
    valid: ANY,
    impl: ANY,
  });
}
