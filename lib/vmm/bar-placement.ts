import { runSteps } from '../base/steps';
import { transaction } from '../memory';
import { ArgRangeError } from '../base/error';
import { hex } from '../base/values';
import type { PciConfigTarget, PciRootBus } from './pci-root-bus';

/** A range of guest-physical (or port) addresses the firmware may hand out, `[base, limit)`. */
export interface AddressWindow {
  /** First address of the window. */
  readonly base: number;
  /** First address past the window (exclusive). */
  readonly limit: number;
}

/** The windows {@link placeBars} allocates from. */
export interface PciWindows {
  /** 32-bit memory BARs and, while they fit, 64-bit ones (below the IOAPIC, as a PC's PCI hole). */
  readonly mem32: AddressWindow;
  /** 64-bit memory BARs that do not fit in `mem32` (optional: without it they must fit below 4 GiB). */
  readonly mem64?: AddressWindow;
  /** I/O BARs. */
  readonly io: AddressWindow;
}

/**
 * A PC-like default: memory from 3 GiB (where lib/dma's Machine starts its PCI hole) up to the
 * IOAPIC at 0xfec00000, ports 0xc000-0xffff.
 */
export const DEFAULT_PCI_WINDOWS: PciWindows = {
  mem32: { base: 0xc0000000, limit: 0xfec00000 },
  io: { base: 0xc000, limit: 0x10000 },
};

/** One BAR (or the ROM, `bar` 6) as {@link placeBars} found and placed it. */
export interface PlacedBar {
  /** Device number of the function on bus 0. */
  readonly slot: number;
  /** Function number, 0 to 7. */
  readonly fn: number;
  /** 0-5, or 6 for the expansion ROM. */
  readonly bar: number;
  /** The BAR's kind as its register declares it, or `rom` for the expansion ROM. */
  readonly type: 'io' | 'mem32' | 'mem64' | 'rom';
  /** The prefetchable bit of a memory BAR (false for I/O and the ROM). */
  readonly prefetchable: boolean;
  /** Size as the BAR declares it. */
  readonly size: number;
  /** The guest-physical address (or port) written to the BAR, aligned to its allocation. */
  readonly address: number;
}

/** Options of {@link placeBars}. */
export interface PlaceBarsOptions {
  /** Also give expansion ROMs an address (left disabled, as firmware leaves them). Default true. */
  roms?: boolean;
  /**
   * Smallest memory allocation (default 4096, SeaBIOS's PCI_DEVICE_MEM_MIN): a sub-page BAR gets a
   * page of its own, so a VMM can map it into the guest (vfio-pci expands it) instead of trapping it.
   */
  minMemSize?: number;
  /** GSI of each function's INTx pin, written to the interrupt line register (0x3c). */
  intxGsi?: (slot: number, pin: number) => number;
}

interface Request {
  slot: number;
  fn: number;
  target: PciConfigTarget;
  bar: number;
  type: PlacedBar['type'];
  prefetchable: boolean;
  size: number;
  alloc: number;
}

const PCI_COMMAND = 0x04;
const PCI_HEADER_TYPE = 0x0e;
const PCI_BASE_ADDRESS_0 = 0x10;
const PCI_ROM_ADDRESS = 0x30;
const PCI_INTERRUPT_LINE = 0x3c;
const PCI_INTERRUPT_PIN = 0x3d;
const CMD_IO = 0x1;
const CMD_MEMORY = 0x2;

/**
 * placeBars: what a PC's firmware does before it boots the guest: size every BAR of every function
 * on the host bridge by writing all-ones and reading back (decode off meanwhile), hand out addresses
 * from the windows largest first at natural alignment, program the BARs (and disabled ROM
 * addresses), write the interrupt line, and turn on memory and I/O decode for what was placed.
 * Bus mastering is left to the guest's drivers, as SeaBIOS leaves it.
 *
 * Returns the placements in devfn and BAR order. A window that cannot hold every BAR is a RangeError
 * naming the BAR, its size and the window; nothing is programmed then. Functions with a header type
 * other than 0 (bridges) are not supported and are refused the same way.
 */
export function placeBars(
  host: PciRootBus,
  windows: PciWindows = DEFAULT_PCI_WINDOWS,
  opts: PlaceBarsOptions = {},
): PlacedBar[] {
  const plan = runSteps(placeBarsSteps(host, windows, opts));
  plan.enable();
  return plan.placed;
}

/** What {@link placeBarsSteps} leaves: the BARs programmed, decode still off until `enable()`. */
export interface BarPlan {
  /** Every BAR that was placed, programmed but not yet decoding. */
  readonly placed: PlacedBar[];
  /** Write the interrupt lines and turn decode on: the one step listeners see (run it in a transaction). */
  enable(): void;
  /**
   * {@link enable} a function at a time, as firmware does, for a caller that gives the event loop a
   * turn between functions (each one run in a transaction of its own: its BARs appear whole).
   */
  readonly enableEach: readonly (() => void)[];
  /**
   * {@link enable} in still smaller steps, each run in a transaction of its own with a turn of the
   * event loop between them: a function's decode turned on with its BARs parked at address 0,
   * where they decode nothing, then each BAR moved to its place, so that what each BAR costs the
   * listeners (DMA maps, KVM slots, exit ranges) is paid in a turn of its own. Ends where
   * {@link enable} does; the ROM keeps its address, disabled, throughout.
   */
  readonly enableSteps: readonly (() => void)[];
}

/**
 * placeBarsSteps: {@link placeBars} in steps (each BAR's sizing, then each function's BARs
 * programmed), with decode off throughout, so no step changes what the guest
 * or a listener sees; `enable()` then turns decode on for all of them at once.
 */
export function* placeBarsSteps(
  host: PciRootBus,
  windows: PciWindows = DEFAULT_PCI_WINDOWS,
  opts: PlaceBarsOptions = {},
): Generator<'probe' | 'program', BarPlan> {
  checkWindow(windows.mem32, 'mem32', 2 ** 32);
  if (windows.mem64) checkWindow(windows.mem64, 'mem64', 2 ** 53);
  checkWindow(windows.io, 'io', 0x10000);
  const minMem = opts.minMemSize ?? 4096;
  if (!isPow2(minMem)) throw new ArgRangeError(`minMemSize ${minMem} is not a power of two`);
  const requests: Request[] = [];
  for (const { slot, fn, target } of host.functions()) {
    const header = target.configRead(PCI_HEADER_TYPE, 1) & 0x7f;
    if (header !== 0) {
      throw new ArgRangeError(
        `PCI 00:${slotName(slot, fn)} has header type ${header}: only endpoints (type 0) are placed`,
      );
    }
    // A BAR at a time, a commit each: with decode off, the sizing writes change nothing a listener sees.
    yield* probe({ slot, fn, target }, opts.roms ?? true, minMem, requests);
  }

  // Largest first packs naturally aligned BARs without holes; ties keep devfn and BAR order.
  const order = [...requests].sort(
    (a, b) => b.alloc - a.alloc || a.slot - b.slot || a.fn - b.fn || a.bar - b.bar,
  );
  const next = { mem32: windows.mem32.base, mem64: windows.mem64?.base ?? 0, io: windows.io.base };
  const placed = new Map<Request, number>();
  for (const r of order) {
    const kind = r.type === 'io' ? 'io' : 'mem32';
    let addr = alignUp(next[kind], r.alloc);
    const window = kind === 'io' ? windows.io : windows.mem32;
    if (addr + r.alloc <= window.limit) {
      next[kind] = addr + r.alloc;
    } else if (r.type === 'mem64' && windows.mem64) {
      addr = alignUp(next.mem64, r.alloc);
      if (addr + r.alloc > windows.mem64.limit) throw noRoom(r, 'mem64', windows.mem64);
      next.mem64 = addr + r.alloc;
    } else {
      throw noRoom(r, kind, window);
    }
    placed.set(r, addr);
  }

  const out: PlacedBar[] = [];
  const byFunction = new Map<PciConfigTarget, { slot: number; fn: number; cmd: number }>();
  const program = (r: Request): void => {
    const addr = placed.get(r) as number;
    const t = r.target;
    writeBar(r, addr);
    const f = byFunction.get(t) ?? { slot: r.slot, fn: r.fn, cmd: 0 };
    if (r.type === 'io') f.cmd |= CMD_IO;
    else if (r.type !== 'rom') f.cmd |= CMD_MEMORY;
    byFunction.set(t, f);
    out.push({
      slot: r.slot,
      fn: r.fn,
      bar: r.bar,
      type: r.type,
      prefetchable: r.prefetchable,
      size: r.size,
      address: addr,
    });
  };
  // A function's BARs programmed in one commit (decode is off: nothing a listener sees changes).
  for (let i = 0; i < requests.length;) {
    if (i > 0) yield 'program';
    let j = i;
    while (j < requests.length && requests[j].target === requests[i].target) j++;
    const mine = requests.slice(i, j);
    transaction(() => mine.forEach(program));
    i = j;
  }
  const functions = [...host.functions()];
  const enableEach = functions.map(({ slot, target }) => (): void => {
    const pin = target.configRead(PCI_INTERRUPT_PIN, 1);
    if (opts.intxGsi && pin >= 1 && pin <= 4) {
      target.configWrite(PCI_INTERRUPT_LINE, 1, opts.intxGsi(slot, pin) & 0xff);
    }
    const cmd = byFunction.get(target)?.cmd ?? 0;
    if (cmd) target.configWrite(PCI_COMMAND, 2, (target.configRead(PCI_COMMAND, 2) | cmd) & 0xffff);
  });
  // Address 0 decodes nothing: a BAR parked there appears only when moved to its place.
  const enableSteps = functions.flatMap(({ target }, i) => {
    const bars = requests.filter((r) => r.target === target && r.bar !== 6);
    return [
      (): void => {
        for (const r of bars) writeBar(r, 0);
        enableEach[i]();
      },
      ...bars.map((r) => (): void => writeBar(r, placed.get(r) as number)),
    ];
  });
  return { placed: out, enable: () => enableEach.forEach((f) => f()), enableEach, enableSteps };
}

/** Writes `addr` to the BAR (both halves of a 64-bit one) or, disabled, to the ROM register. */
function writeBar(r: Request, addr: number): void {
  const t = r.target;
  if (r.bar === 6) {
    t.configWrite(PCI_ROM_ADDRESS, 4, addr >>> 0); // enable bit clear: the guest turns it on to read
    return;
  }
  const reg = PCI_BASE_ADDRESS_0 + 4 * r.bar;
  const lowBits = t.configRead(reg, 4) & (r.type === 'io' ? 0x3 : 0xf);
  t.configWrite(reg, 4, ((addr % 2 ** 32) | lowBits) >>> 0);
  if (r.type === 'mem64') t.configWrite(reg + 4, 4, Math.floor(addr / 2 ** 32));
}

/** A function on the bus: where it is, and its configuration space. */
interface Fn {
  readonly slot: number;
  readonly fn: number;
  readonly target: PciConfigTarget;
}

/**
 * Sizes the BARs and ROM of one function into `out`, a step (and a commit) for each, with decode
 * off until the last and every register restored after.
 */
function* probe(f: Fn, roms: boolean, minMem: number, out: Request[]): Generator<'probe'> {
  const t = f.target;
  const cmd = t.configRead(PCI_COMMAND, 2);
  transaction(() => t.configWrite(PCI_COMMAND, 2, cmd & ~(CMD_IO | CMD_MEMORY)));
  try {
    for (let bar = 0; bar < 6;) {
      bar = transaction(() => sizeBar(f, bar, minMem, out));
      yield 'probe';
    }
    if (roms) {
      transaction(() => sizeRom(f, minMem, out));
      yield 'probe';
    }
  } finally {
    transaction(() => t.configWrite(PCI_COMMAND, 2, cmd));
  }
}

/** Sizes BAR `bar` (and the upper half of a 64-bit one) into `out`; returns the next BAR's index. */
function sizeBar({ slot, fn, target: t }: Fn, bar: number, minMem: number, out: Request[]): number {
  const reg = PCI_BASE_ADDRESS_0 + 4 * bar;
  const orig = t.configRead(reg, 4);
  t.configWrite(reg, 4, 0xffffffff);
  const lo = t.configRead(reg, 4);
  t.configWrite(reg, 4, orig);
  if (lo === 0) return bar + 1;
  if (lo & 1) {
    const mask = lo & 0xfffffffc & 0xffff; // I/O decodes 16 bits; the upper half may read 0
    const size = lowestBit(mask);
    if (size) out.push({ slot, fn, target: t, bar, type: 'io', prefetchable: false, size, alloc: size });
    return bar + 1;
  }
  const prefetchable = (lo & 0x8) !== 0;
  if ((lo & 0x6) === 0x4 && bar < 5) {
    const origHi = t.configRead(reg + 4, 4);
    t.configWrite(reg + 4, 4, 0xffffffff);
    const hi = t.configRead(reg + 4, 4);
    t.configWrite(reg + 4, 4, origHi);
    const low = (lo & 0xfffffff0) >>> 0;
    const size = low ? lowestBit(low) : lowestBit(hi) * 2 ** 32;
    if (size) {
      const alloc = Math.max(size, minMem);
      out.push({ slot, fn, target: t, bar, type: 'mem64', prefetchable, size, alloc });
    }
    return bar + 2; // the upper half
  }
  const size = lowestBit((lo & 0xfffffff0) >>> 0);
  if (size) {
    const alloc = Math.max(size, minMem);
    out.push({ slot, fn, target: t, bar, type: 'mem32', prefetchable, size, alloc });
  }
  return bar + 1;
}

/** Sizes the expansion ROM into `out`. */
function sizeRom({ slot, fn, target: t }: Fn, minMem: number, out: Request[]): void {
  const orig = t.configRead(PCI_ROM_ADDRESS, 4);
  t.configWrite(PCI_ROM_ADDRESS, 4, 0xfffff800);
  const rb = t.configRead(PCI_ROM_ADDRESS, 4);
  t.configWrite(PCI_ROM_ADDRESS, 4, orig);
  const size = lowestBit((rb & 0xfffff800) >>> 0);
  if (size) {
    const alloc = Math.max(size, minMem);
    out.push({ slot, fn, target: t, bar: 6, type: 'rom', prefetchable: false, size, alloc });
  }
}

function lowestBit(v: number): number {
  if (v === 0) return 0;
  let b = 1;
  while ((v / b) % 2 === 0) b *= 2;
  return b;
}

function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

function isPow2(v: number): boolean {
  return Number.isSafeInteger(v) && v > 0 && lowestBit(v) === v;
}

function checkWindow(w: AddressWindow | undefined, name: string, max: number): void {
  if (
    !w ||
    !Number.isSafeInteger(w.base) ||
    !Number.isSafeInteger(w.limit) ||
    w.base < 0 ||
    w.limit <= w.base ||
    w.limit > max
  ) {
    throw new ArgRangeError(
      `PCI ${name} window ${JSON.stringify(w)} must be [base, limit) with 0 <= base < limit <= ${hex(max)}`,
    );
  }
}

function noRoom(r: Request, kind: string, w: AddressWindow): RangeError {
  const what = r.bar === 6 ? 'ROM' : `BAR ${r.bar}`;
  return new ArgRangeError(
    `PCI 00:${slotName(r.slot, r.fn)} ${what} (${r.type}, ${hex(r.size)} bytes) does not fit in the ${kind} window [${hex(w.base)}, ${hex(w.limit)}) with the larger BARs placed`,
  );
}

function slotName(slot: number, fn: number): string {
  return `${slot.toString(16).padStart(2, '0')}.${fn}`;
}
