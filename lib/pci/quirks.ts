import type { AccessSize, MemoryRegionOps } from '../memory';
import type { Msix } from './msix';
import type { DeviceErrorEvent } from './report';

/** The IDs a quirk is matched against: those the device presents to the guest (after any override). */
export interface PresentedIds {
  /** Vendor ID as the guest sees it. */
  readonly vendorId: number;
  /** Device ID as the guest sees it. */
  readonly deviceId: number;
}

/** Declarative match of a quirk: vendor and device as presented (omitted = any), and the BAR. */
export interface QuirkMatch {
  /** Vendor ID to match; omitted matches any vendor. */
  readonly vendor?: number;
  /** Device ID to match; omitted matches any device. */
  readonly device?: number;
  /** BAR number (0 to 5) the quirk's overlays go into. */
  readonly bar: number;
}

/** What a quirk's overlays can reach. */
export interface QuirkContext {
  /** PCI address of the device. */
  readonly bdf: string;
  /** The BAR number being quirked. */
  readonly bar: number;
  /** The IDs the device presents to the guest. */
  readonly ids: PresentedIds;
  /** One pread of exactly `size` bytes at `offset` in the BAR, bypassing every overlay; a VFIO failure reads as all-ones and is reported. */
  readBar(offset: number, size: AccessSize): number | bigint;
  /** One pwrite of exactly `size` bytes at `offset` in the BAR, bypassing every overlay; a VFIO failure drops it and is reported. */
  writeBar(offset: number, size: AccessSize, value: number | bigint): void;
  /** The emulated MSI-X table, when the device has one. */
  readonly msix: Msix | null;
  /** Reports a guest access the quirk could not serve, through the device's `device-error` event. */
  report(e: Omit<DeviceErrorEvent, 'bdf'>): void;
}

/** One overlay region a quirk adds inside the BAR's IO region. */
export interface QuirkOverlay {
  /** Region name, as QEMU names it (e.g. "vfio-rtl8168-window-data-quirk"). */
  readonly name: string;
  /** Offset inside the BAR. */
  readonly offset: number;
  /** Size of the overlay in bytes; an overlay reaching past the BAR is skipped with a notice. */
  readonly size: number;
  /** Priority among the BAR region's subregions; QEMU uses 1 so overlays sit above the mmaps. */
  readonly priority?: number;
  /** The overlay's callbacks and access constraints (an `io` region's). */
  readonly ops: MemoryRegionOps;
}

/** A quirk: a name, what it applies to, and the overlays it installs. */
export interface QuirkDefinition {
  /** The quirk's name, used in notices (e.g. `rtl8168-window`). */
  readonly name: string;
  /** Which devices and BAR it applies to. */
  readonly match: QuirkMatch;
  /** The overlays to put on the matched BAR, built for this device. */
  overlays(ctx: QuirkContext): QuirkOverlay[];
}

/** True when `q` applies to BAR `bar` of a device presenting `ids`. */
export function quirkMatches(q: QuirkDefinition, ids: PresentedIds, bar: number): boolean {
  const m = q.match;
  return (
    m.bar === bar &&
    (m.vendor === undefined || m.vendor === ids.vendorId) &&
    (m.device === undefined || m.device === ids.deviceId)
  );
}

const RTL_DATA = 0x70;
const RTL_ADDRESS = 0x74;
/** Address register bit 31: the write flag of the window, and the "complete" flag when read back. */
const RTL_FLAG = 0x8000_0000;

/**
 * The RTL8168 BAR 2 window quirk (QEMU's vfio_probe_rtl8168_bar2_quirk).
 *
 * RTL8168 drivers reach the MSI-X table through a window in BAR 2: a data register at 0x70 and an
 * address register at 0x74. An address of 0x1xxxx targets the table. Those accesses are redirected to
 * the emulated table, since the device's own table is owned by the host; every other window access
 * goes to the device at its original width. A table access the emulated table refuses (unaligned or
 * outside it) is reported: a write is dropped, a read returns 0. Without MSI-X, table writes are
 * dropped and reported, and reads see the device, as in QEMU.
 */
export const rtl8168WindowQuirk: QuirkDefinition = {
  name: 'rtl8168-window',
  match: { vendor: 0x10ec, device: 0x8168, bar: 2 },
  overlays(ctx) {
    // Window state: whether the last address targets the table, and the latched address and data.
    let enabled = false;
    let addr = 0;
    let data = 0;
    const valid = { minAccessSize: 4 as AccessSize, maxAccessSize: 4 as AccessSize, unaligned: false };
    // Only what the emulated table accepts is redirected to it; QEMU's msix-table region refuses the
    // rest (unaligned or outside the table), and so do we, reporting it instead of throwing.
    const tableTakes = (offset: number, size: AccessSize): boolean =>
      ctx.msix !== null && offset % size === 0 && ctx.msix.containsTable(offset, size);
    const refuse = (isWrite: boolean, offset: number, size: AccessSize): void =>
      ctx.report({ reason: 'msix-window', isWrite, where: 'msix-table', offset, size });
    const address: MemoryRegionOps = {
      read(o, size) {
        const v = ctx.readBar(RTL_ADDRESS + o, size);
        // The device would report completion by flipping bit 31; fake it for redirected accesses.
        return enabled ? (addr ^ RTL_FLAG) >>> 0 : v;
      },
      write(o, size, value) {
        const v = Number(value) >>> 0;
        enabled = false;
        if ((v & 0x7fff_0000) === 0x1_0000) {
          enabled = true;
          addr = v;
          if (v & RTL_FLAG) {
            const offset = v & 0xfff;
            if (tableTakes(offset, size)) ctx.msix?.tableWrite(offset, size, data);
            else refuse(true, offset, size);
            // A table write is never forwarded: the guest's vector must not reach the device.
            return;
          }
        }
        ctx.writeBar(RTL_ADDRESS + o, size, value);
      },
      valid,
      impl: valid,
    };
    const dataOps: MemoryRegionOps = {
      read(o, size) {
        let v = ctx.readBar(RTL_DATA + o, size);
        if (enabled && ctx.msix) {
          const offset = addr & 0xfff;
          if (tableTakes(offset, size)) {
            v = ctx.msix.tableRead(offset, size);
          } else {
            // QEMU 7.2 reads a refused msix-table access as 0, replacing the device's value.
            refuse(false, offset, size);
            v = 0;
          }
        }
        return v;
      },
      write(o, size, value) {
        data = Number(value) >>> 0;
        ctx.writeBar(RTL_DATA + o, size, value);
      },
      valid,
      impl: valid,
    };
    return [
      { name: 'vfio-rtl8168-window-address-quirk', offset: RTL_ADDRESS, size: 4, priority: 1, ops: address },
      { name: 'vfio-rtl8168-window-data-quirk', offset: RTL_DATA, size: 4, priority: 1, ops: dataOps },
    ];
  },
};

/** The quirks every device is checked against unless the caller replaces the list. */
export const DEFAULT_QUIRKS: readonly QuirkDefinition[] = [rtl8168WindowQuirk];
