/**
 * Quirk installation (QEMU's vfio_bar_quirk_setup): every quirk matching the IDs the device presents
 * and a BAR puts its overlays inside that BAR's fd-backed region, where they sit above the mmaps.
 */
import { ArgRangeError } from '../base/error';
import { MemoryRegion } from '../memory';
import type { Msix } from './msix';
import { type PresentedIds, type QuirkContext, type QuirkDefinition, quirkMatches } from './quirks';
import type { BarState, RegionIo } from './region';
import { hex } from './types';

/**
 * installQuirks: the overlays of each quirk in `quirks` that matches, recorded in `bar.quirks`. An
 * overlay past the end of the BAR is skipped with one notice (QEMU does not check, and a device
 * presented under another's IDs can have a BAR too small); a malformed one is a bug in the quirk
 * (RangeError). @internal
 */
export function installQuirks(
  io: RegionIo,
  ids: PresentedIds,
  bars: readonly (BarState | null)[],
  msix: Msix | null,
  quirks: readonly QuirkDefinition[],
): void {
  const bdf = io.bdf;
  for (const bar of bars) {
    if (!bar?.region) continue;
    const region = bar.region;
    for (const q of quirks) {
      if (!quirkMatches(q, ids, bar.index)) continue;
      const ctx: QuirkContext = {
        bdf,
        bar: bar.index,
        ids,
        readBar: (o, s) => io.read(bar.index, region.name, o, s),
        writeBar: (o, s, v) => io.write(bar.index, region.name, o, s, v),
        msix,
        report: (e) => io.reporter.report({ bdf, ...e }),
      };
      const skipped: string[] = [];
      for (const ov of q.overlays(ctx)) {
        if (
          !Number.isSafeInteger(ov.offset) ||
          !Number.isSafeInteger(ov.size) ||
          ov.offset < 0 ||
          ov.size <= 0
        ) {
          throw new ArgRangeError(
            `${bdf} BAR ${bar.index}: quirk overlay ${ov.name} at ${String(ov.offset)}+${String(ov.size)} needs an integer offset >= 0 and size > 0`,
          );
        }
        if (ov.offset + ov.size > bar.regionSize) {
          skipped.push(`${ov.name} at ${hex(ov.offset)}+${hex(ov.size)}`);
          continue;
        }
        const mr = MemoryRegion.io(ov.name, ov.size, ov.ops);
        mr.tag = io.tag(
          bar.index,
          'quirk',
          ov.offset,
          ov.ops.valid?.minAccessSize ?? 1,
          ov.ops.valid?.maxAccessSize ?? 4,
        );
        region.addSubregion(mr, ov.offset, ov.priority ?? 1);
        bar.quirks.push(ov.name);
      }
      if (skipped.length > 0) {
        // The quirk table is the host's setup, not the guest's doing: a process warning.
        process.emitWarning(
          `${bdf} BAR ${bar.index}: quirk ${q.name} skipped overlays past the end of the BAR (${hex(bar.regionSize)} bytes): ${skipped.join(', ')}`,
          { type: 'VfioPciDeviceWarning', code: 'VFIO_BRIDGE_QUIRK_SKIPPED' },
        );
      }
    }
  }
}
